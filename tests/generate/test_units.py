"""The generation plan: units, dependency order, cycles, slice hashes."""

from __future__ import annotations

from pathlib import Path

import pytest

from allium.generate.units import (PlanError, build_plan, describe_plan, interface_decls, load_plan,
                                   load_spec_set, spec_slice_hash, topological_order)

SPECS = Path(__file__).parents[2] / "specs"


def _write(folder: Path, files: dict[str, str]) -> list[Path]:
    paths = []
    for name, body in files.items():
        path = folder / name
        path.write_text("-- allium: 3\n" + body, encoding="utf-8")
        paths.append(path)
    return paths


def _plan(folder: Path, files: dict[str, str], **kwargs):
    paths = _write(folder, files)
    return load_plan(paths, package="pkg", obligations=lambda m: (), **kwargs)


@pytest.fixture(scope="module")
def showcase():
    return load_plan(sorted(SPECS.glob("*.allium")), package="ledgerd", obligations=lambda m: ())


def test_showcase_has_one_unit_per_module_in_dependency_order(showcase) -> None:
    names = [u.name for u in showcase.units]
    assert sorted(names) == sorted(p.stem for p in SPECS.glob("*.allium"))
    assert names[0] == "core"
    for i, unit in enumerate(showcase.units):
        assert set(unit.depends_on_units) <= set(names[:i]), unit.name
    clerk = showcase.unit("clerk")
    assert set(clerk.depends_on_units) == {"core", "arbiter", "ledger", "registrar", "cluster"}
    assert clerk.files == ("ledgerd/clerk.py", "tests/test_clerk.py")
    assert clerk.spec_files == ("clerk.allium",)
    assert "Is the dedup window what guarantees exactly-once?" in showcase.unit("warden").owns
    assert ("core", "Outcome") in showcase.unit("warden").depends_on_decls


def test_describe_plan_lists_every_unit(showcase) -> None:
    text = describe_plan(showcase)
    assert all(u.name in text for u in showcase.units)


def test_unknown_unit_is_a_clear_error(showcase) -> None:
    with pytest.raises(PlanError, match="no unit named 'nope'"):
        showcase.unit("nope")


def test_imports_are_followed(tmp_path: Path) -> None:
    _write(tmp_path, {"base.allium": "entity A {\n    x: Integer\n}\n"})
    (app,) = _write(tmp_path, {"app.allium": 'use "./base.allium" as base\n'
                                             "entity B {\n    a: base/A\n}\n"})
    modules = load_spec_set([app])
    assert sorted(Path(p).name for p in modules) == ["app.allium", "base.allium"]


def test_cycle_is_reported_with_its_path(tmp_path: Path) -> None:
    files = {
        "a.allium": 'use "./b.allium" as b\nentity A {\n    x: b/B\n}\n',
        "b.allium": 'use "./c.allium" as c\nentity B {\n    x: c/C\n}\n',
        "c.allium": 'use "./a.allium" as a\nentity C {\n    x: a/A\n}\n',
    }
    with pytest.raises(PlanError, match=r"unit dependency cycle: a -> b -> c -> a"):
        _plan(tmp_path, files)


def test_topological_order_breaks_ties_by_name(tmp_path: Path) -> None:
    plan = _plan(tmp_path, {
        "z.allium": "entity Z {\n    v: Integer\n}\n",
        "m.allium": 'use "./z.allium" as z\nentity M {\n    v: z/Z\n}\n',
        "a.allium": "entity A {\n    v: Integer\n}\n",
    })
    assert [u.name for u in plan.units] == ["a", "z", "m"]
    assert topological_order({u.name: u for u in plan.units}) == ["a", "z", "m"]


def test_syntax_error_stops_planning(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="syntax errors"):
        _plan(tmp_path, {"bad.allium": "entity {\n"})


def test_obligations_are_assigned_to_their_unit(tmp_path: Path) -> None:
    class Ob:
        def __init__(self, oid: str) -> None:
            self.id, self.category, self.description, self.span = oid, "rule-success", oid, None

    paths = _write(tmp_path, {"a.allium": "rule R {\n    when: Go(x)\n    ensures: x.done = true\n}\n",
                              "b.allium": "rule S {\n    when: Go(x)\n    ensures: x.done = true\n}\n"})
    plan = load_plan(paths, package="pkg", obligations=lambda m: [Ob(f"rule-success.{m.rules[0].name}")])
    assert plan.unit("a").obligations == ("rule-success.R",)
    assert plan.unit("b").obligations == ("rule-success.S",)
    assert [o.id for o in plan.obligations["a"]] == ["rule-success.R"]


def test_unit_output_area(showcase) -> None:
    unit = showcase.unit("warden")
    assert unit.allows("ledgerd/warden.py") and unit.allows("tests/test_warden.py")
    assert unit.allows("ledgerd/warden_index.py") and unit.allows("tests/test_warden_expiry.py")
    assert not unit.allows("ledgerd/core.py")
    assert not unit.allows("ledgerd/warden.txt")
    assert not unit.allows("tests/test_core.py")
    assert not unit.allows("other/warden.py")
    assert not unit.allows("ledgerd/sub/warden_x.py")


BASE = ("entity Product {\n    sku: String\n    price: Money\n}\n\n"
        "value Money {\n    amount: Integer\n}\n\n"
        "entity Unrelated {\n    x: Integer\n}\n\n"
        "rule Withdraw {\n    when: Withdraw(p)\n    ensures: p.sku = \"gone\"\n}\n")
APP = ('use "./base.allium" as base\n\n'
       "entity Order {\n    product: base/Product\n    quantity: Integer\n}\n")


def _slices(folder: Path, base: str, app: str) -> dict[str, str]:
    plan = _plan(folder, {"base.allium": base, "app.allium": app})
    return {u.name: spec_slice_hash(u) for u in plan.units}


def test_slice_hash_ignores_edits_elsewhere(tmp_path: Path) -> None:
    before = _slices(tmp_path, BASE, APP)
    # A rule and an unrelated entity of the dependency change: app's slice does not.
    edited = BASE.replace('"gone"', '"withdrawn"').replace("x: Integer", "x: String")
    after = _slices(tmp_path, edited, APP)
    assert after["app"] == before["app"]
    assert after["base"] != before["base"]


def test_slice_hash_follows_the_interface_it_uses(tmp_path: Path) -> None:
    before = _slices(tmp_path, BASE, APP)
    # Money is reached through Product.price, so it is part of app's interface.
    after = _slices(tmp_path, BASE.replace("amount: Integer", "amount: Decimal"), APP)
    assert after["app"] != before["app"]


def test_slice_hash_follows_own_declarations_not_layout(tmp_path: Path) -> None:
    before = _slices(tmp_path, BASE, APP)
    relaid = APP.replace("    quantity: Integer\n", "    quantity:   Integer   -- how many\n")
    assert _slices(tmp_path, BASE, relaid)["app"] == before["app"]
    changed = APP.replace("quantity: Integer", "quantity: Decimal")
    assert _slices(tmp_path, BASE, changed)["app"] != before["app"]


def test_interface_is_what_the_unit_names(tmp_path: Path) -> None:
    plan = _plan(tmp_path, {"base.allium": BASE, "app.allium": APP})
    names = [d.name for d in interface_decls(plan, plan.unit("app"), "base")]
    assert names == ["Product", "Money"]


def test_interface_without_alias_is_the_whole_public_surface(tmp_path: Path) -> None:
    plan = _plan(tmp_path, {"base.allium": BASE,
                            "app.allium": 'use "./base.allium"\n\nentity Order {\n    n: Integer\n}\n'})
    names = [d.name for d in interface_decls(plan, plan.unit("app"), "base")]
    assert names == ["Product", "Money", "Unrelated"]


def test_package_must_be_an_identifier(tmp_path: Path) -> None:
    paths = _write(tmp_path, {"a.allium": "entity A {\n    x: Integer\n}\n"})
    with pytest.raises(PlanError, match="not a Python identifier"):
        build_plan(load_spec_set(paths), package="my-pkg", obligations=lambda m: ())


def test_missing_import_names_the_importer(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match=r"missing.allium does not exist \(imported by .*app.allium\)"):
        _plan(tmp_path, {"app.allium": 'use "./missing.allium" as m\n'})


# ---------------------------------------------------------------- ownership and names


def test_a_unit_named_as_another_plus_a_suffix_does_not_own_its_files(tmp_path: Path) -> None:
    plan = _plan(tmp_path, {"library.allium": "entity Book { title: String }\n",
                            "library_fines.allium": "entity Fine { amount: Integer }\n"})
    library, fines = plan.unit("library"), plan.unit("library_fines")
    for path in (*fines.files, "pkg/library_fines_helpers.py", "tests/test_library_fines_more.py"):
        assert not library.allows(path), path
        assert fines.allows(path), path
    assert library.allows("pkg/library_store.py") and library.allows("tests/test_library_store.py")


def test_regenerating_a_unit_keeps_the_files_of_a_unit_whose_name_extends_it(tmp_path: Path) -> None:
    from allium.generate.writer import StagedOutput

    plan = _plan(tmp_path, {"library.allium": "entity Book { title: String }\n",
                            "library_fines.allium": "entity Fine { amount: Integer }\n"})
    out = tmp_path / "generated"
    with StagedOutput(out) as staged:
        for unit in plan.units:
            staged.write_unit(unit, [(f, "x = 1\n") for f in unit.files])
        staged.commit()
    with StagedOutput(out) as staged:
        staged.write_unit(plan.unit("library"), [(f, "y = 2\n") for f in plan.unit("library").files])
        staged.commit()
    assert (out / "pkg" / "library_fines.py").read_text() == "x = 1\n"
    assert (out / "tests" / "test_library_fines.py").read_text() == "x = 1\n"


def test_overlapping_ownership_is_refused_when_planning(tmp_path: Path) -> None:
    from dataclasses import replace

    from allium.generate.units import check_ownership

    plan = _plan(tmp_path, {"a.allium": "entity A { x: String }\n", "b.allium": "entity B { y: String }\n"})
    a, b = plan.units
    clash = replace(b, files=(*b.files, "pkg/cli.py")), replace(a, files=(*a.files, "pkg/cli.py"))
    with pytest.raises(PlanError, match="both own pkg/cli.py"):
        check_ownership(clash)
    for own in ("pkg/__init__.py", "pkg/__main__.py", "tests/conftest.py"):
        with pytest.raises(PlanError, match=f"{own} belongs to allium"):
            check_ownership((replace(a, files=(*a.files, own)),))


@pytest.mark.parametrize("stem", ["class", "import", "__init__", "__main__"])
def test_keywords_and_dunder_names_are_refused_as_unit_names(tmp_path: Path, stem: str) -> None:
    with pytest.raises(PlanError, match=f"unit {stem!r}.*(keyword|reserved)"):
        _plan(tmp_path, {f"{stem}.allium": "entity A { x: String }\n"})


@pytest.mark.parametrize("package", ["class", "__main__", "tests"])
def test_keywords_and_dunder_names_are_refused_as_package_names(tmp_path: Path, package: str) -> None:
    paths = _write(tmp_path, {"a.allium": "entity A { x: String }\n"})
    with pytest.raises(PlanError, match=f"package name {package!r}"):
        load_plan(paths, package=package, obligations=lambda m: ())
