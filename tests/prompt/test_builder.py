"""The rendered request: golden files, strictness, sections, and a cacheable prefix.

Golden files live in tests/prompt/golden/. After an intended change to the
templates or the builder, regenerate them with

    ALLIUM_UPDATE_GOLDEN=1 /work/venv/bin/python -m pytest tests/prompt

and review the diff like any other change.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import jinja2
import pytest

from allium.generate.units import Plan, build_plan, load_spec_set
from allium.prompt import builder
from allium.prompt.builder import TemplateError, build_request, environment, render_prefix, render_unit

from .helpers import FakeObligation

HERE = Path(__file__).parent
FIXTURES = HERE / "fixtures"
GOLDEN = HERE / "golden"
UPDATE = os.environ.get("ALLIUM_UPDATE_GOLDEN") == "1"

OBLIGATIONS = {
    "catalog": [FakeObligation("rule-success.WithdrawProduct", "rule-success",
                               "WithdrawProduct moves a listed product to withdrawn")],
    "orders": [
        FakeObligation("rule-success.PlaceOrder", "rule-success",
                       "PlaceOrder creates an open order"),
        FakeObligation("rule-failure.PlaceOrder.requires.1", "rule-failure",
                       "PlaceOrder is refused for a product that is not listed"),
        FakeObligation("invariant.Order.PositiveQuantity", "invariant",
                       "No order has a quantity below one"),
    ],
}


def _obligations(module):
    return OBLIGATIONS[Path(module.path).stem]


@pytest.fixture(scope="module")
def plan() -> Plan:
    modules = load_spec_set([FIXTURES / "orders.allium"])
    return build_plan(modules, package="shop", root=FIXTURES, obligations=_obligations)


def _check_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8", newline="")
    assert path.exists(), f"missing golden file {path}; run with ALLIUM_UPDATE_GOLDEN=1"
    expected = path.read_text(encoding="utf-8")
    assert actual == expected, f"{name} differs from its golden file; rerun with ALLIUM_UPDATE_GOLDEN=1 if intended"


def test_golden_prefix(plan: Plan) -> None:
    _check_golden("prefix.txt", render_prefix(plan))


@pytest.mark.parametrize("unit", ["catalog", "orders"])
def test_golden_unit(plan: Plan, unit: str) -> None:
    _check_golden(f"unit_{unit}.txt", render_unit(plan, plan.unit(unit)))


def test_golden_payload(plan: Plan) -> None:
    request = build_request("orders", plan, model="claude-sonnet-4-5", max_tokens=16000)
    payload = json.dumps(request.to_payload(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    _check_golden("request_orders.json", payload)


def test_prefix_is_byte_identical_across_units(plan: Plan) -> None:
    requests = [build_request(u, plan, model="claude-sonnet-4-5") for u in plan.units]
    prefixes = {r.system for r in requests}
    assert len(prefixes) == 1
    assert len({r.messages[0]["content"] for r in requests}) == len(requests)
    # The prefix is the cached block; the unit part is not.
    system = requests[0].to_payload()["system"]
    assert system[-1]["cache_control"] == {"type": "ephemeral"}
    assert "WithdrawProduct" in system[-1]["text"] and "PlaceOrder" in system[-1]["text"]


def test_requests_are_reproducible(plan: Plan) -> None:
    a = build_request("orders", plan, model="m", max_tokens=100)
    b = build_request("orders", plan, model="m", max_tokens=100)
    assert a.request_hash() == b.request_hash()
    assert a.unit == "orders" and a.max_tokens == 100 and a.model == "m"


def _section(text: str, title: str) -> str:
    start = text.index(f"## {title}")
    rest = text[start + 3:]
    end = rest.find("\n## ")
    return rest if end == -1 else rest[:end]


def test_resolved_questions_are_settled_decisions(plan: Plan) -> None:
    text = render_unit(plan, plan.unit("orders"))
    settled = _section(text, "SETTLED DECISIONS")
    assert "Are prices snapshotted at order time?" in settled
    assert "The total is derived from the product's current price" in settled
    assert "a\n    snapshot would only add a field that can disagree" in settled
    assert "do not reopen" in settled
    assert "Are prices snapshotted" not in _section(text, "OPEN QUESTIONS")


def test_open_questions_are_not_decided_silently(plan: Plan) -> None:
    open_part = _section(render_unit(plan, plan.unit("orders")), "OPEN QUESTIONS")
    assert "Should a withdrawn product cancel its open orders?" in open_part
    assert "ASSUMPTION:" in open_part


def test_guidance_is_attached_to_its_construct(plan: Plan) -> None:
    direction = _section(render_unit(plan, plan.unit("orders")), "Implementation direction")
    rule = direction.index("### rule PlaceOrder")
    assert direction.index("Reserve stock before creating the order") > rule
    contract = direction.index("### contract PaymentGateway")
    assert direction.index("@guarantee ChargesAtMostOnce") > contract


def test_obligations_and_dependencies(plan: Plan) -> None:
    text = render_unit(plan, plan.unit("orders"))
    obligations = _section(text, "Obligations to cover")
    assert "`rule-failure.PlaceOrder.requires.1` [rule-failure]: PlaceOrder is refused" in obligations
    assert "WithdrawProduct" not in obligations  # another unit's obligation
    deps = _section(text, "Dependency interfaces")
    assert "`shop.catalog`" in deps and "entity Product {" in deps
    assert "value Money {" in deps and "enum ProductStatus" in deps  # what Product mentions
    assert "rule WithdrawProduct" not in deps  # behaviour is not interface


def test_strict_undefined_raises_on_a_missing_variable(tmp_path: Path, plan: Plan) -> None:
    (tmp_path / "system.j2").write_text("package {{ package }} uses {{ not_supplied }}\n")
    (tmp_path / "unit.j2").write_text("{{ unit.name }}\n")
    env = environment(tmp_path)
    assert env.undefined is jinja2.StrictUndefined
    with pytest.raises(TemplateError, match="not_supplied"):
        render_prefix(plan, env)
    with pytest.raises(jinja2.UndefinedError):
        environment().from_string("{{ nope }}").render()


def test_templates_found_in_checkout_and_explicit_folder(tmp_path: Path) -> None:
    root = builder.template_root()
    assert (root / "system.j2").is_file() and (root / "unit.j2").is_file()
    (tmp_path / "system.j2").write_text("x")
    assert builder.template_root(tmp_path) == tmp_path


def test_only_prompt_package_imports_jinja2() -> None:
    allium_root = Path(builder.__file__).parents[1]
    imports = re.compile(r"^\s*(import|from)\s+jinja2\b", re.MULTILINE)
    offenders = [p for p in allium_root.rglob("*.py")
                 if imports.search(p.read_text(encoding="utf-8")) and "prompt" not in p.parts]
    assert offenders == []
