"""Every fault scenario of benchmarks/resilience.py, with small counts, against
the generated service started by its own launcher on loopback. A lost,
duplicated or changed outcome, a history mismatch or an unanswered request
fails the test; the report names each violation."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import resilience


def test_every_scenario_keeps_every_invariant(tmp_path: Path) -> None:
    out = tmp_path / "quick.json"
    code = resilience.main(["--quick", "--json", str(out)])
    result = json.loads(out.read_text())
    assert {s["scenario"] for s in result["scenarios"]} == {s.name for s in resilience.SCENARIOS}
    failures = {s["scenario"]: s["check"]["examples"] for s in result["scenarios"] if not s["ok"]}
    failures.update({f"whole history of {o['scenarios']}": o["examples"] for o in result["overall"] if not o["ok"]})
    assert not failures, json.dumps(failures, indent=1)
    assert code == 0 and result["ok"]
