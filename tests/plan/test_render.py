"""The JSON document and the text report."""

from __future__ import annotations

import json

from allium.plan import plan_for, render_json, render_text, to_document
from tests.plan import specs
from tests.plan.conftest import parse, plan


def test_json_document_shape() -> None:
    doc = json.loads(render_json(plan(specs.LIFECYCLE), version=3))
    assert doc["language_version"] == 3
    assert (doc["format"], doc["version"]) == ("allium.plan", 1)
    first = doc["obligations"][0]
    assert set(first) >= {"id", "category", "description", "source_construct", "source_span", "component"}
    assert set(first["source_span"]) == {"file", "line", "col", "end_line", "end_col", "start", "end"}
    assert first["source_span"]["file"] == "spec.allium"


def test_json_leaves_out_absent_optional_keys() -> None:
    by = {o["id"]: o for o in to_document(plan(specs.LIFECYCLE))["obligations"]}
    assert "detail" not in by["transition-rejected.Order.status"]
    assert "dependencies" not in by["entity-fields.Order"]
    assert by["invariant.Order.NonNegativeTotal"]["expression"] == "this.total >= 0"
    assert by["rule-success.ShipOrder"]["dependencies"]["trigger_source"] == "external"


def test_json_byte_offsets_match_the_text() -> None:
    text = specs.LIFECYCLE
    ob = {o.id: o for o in plan(text)}["transition-edge.Order.pending.confirmed"]
    span = ob.to_json()["source_span"]
    assert text.encode()[span["start"] : span["end"]].decode() == "pending -> confirmed"


def test_text_groups_by_construct() -> None:
    out = render_text(plan(specs.SURFACE))
    lines = out.splitlines()
    assert "surface TicketDesk  (spec.allium:13)" in lines
    assert lines.count("surface TicketDesk  (spec.allium:13)") == 1
    assert "  surface-provides.TicketDesk.2" in lines
    assert lines[-1] == "9 obligations, 7 categories"


def test_text_for_nothing() -> None:
    assert render_text([]) == "No obligations.\n0 obligations, 0 categories\n"


def test_plan_for_keeps_module_order_and_components() -> None:
    first = parse(specs.TEMPORAL, "holds.allium")
    second = parse(specs.SURFACE, "desk.allium")
    obs = plan_for([first, second])
    assert [o.component for o in obs[:1]] == ["holds"]
    assert obs[-1].component == "desk"
    assert len(obs) == len(plan(specs.TEMPORAL)) + len(plan(specs.SURFACE))


def test_text_keeps_when_crossings_with_their_rule() -> None:
    out = render_text(plan(specs.LIFECYCLE))
    group = out.split("rule ShipOrder  (spec.allium:")[1].split("\n\n")[0]
    assert "when-set.ShipOrder.Order.tracking_number" in group
    assert out.count("rule ShipOrder  (") == 1
