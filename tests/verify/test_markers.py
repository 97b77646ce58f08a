import pytest

from allium.verify import implemented_rules, implements


def test_implements_records_rules_in_order_without_duplicates() -> None:
    @implements("EntryExpires")
    @implements("EvictOldest", "EntryExpires")
    def expire() -> None: ...

    assert implemented_rules(expire) == ("EvictOldest", "EntryExpires")


def test_untagged_code_implements_nothing() -> None:
    assert implemented_rules(lambda: None) == ()


@pytest.mark.parametrize("bad", [(), ("",), (3,)])
def test_implements_rejects_missing_or_non_string_names(bad: tuple) -> None:
    with pytest.raises(ValueError):
        implements(*bad)
