"""`allium check` grows linearly with spec size (item 12 of issue 17).

Speed is measured by benchmarks/scale.py; this test counts work instead of
timing it: the Python function calls the checker makes on N and 2N copies of
a block (parsing excluded). A pass that scans every status field per rule
(as guessing a binding's entity once did) makes the count grow fourfold.
"""

from __future__ import annotations

import sys
from pathlib import Path

from allium.check import check_results
from allium.syntax import parse_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from scale import BLOCK  # noqa: E402


def calls_to_check(tmp_path: Path, blocks: int) -> int:
    path = tmp_path / f"spec{blocks}.allium"
    path.write_text("-- allium: 3\n" + "".join(BLOCK.format(i=i) for i in range(blocks)), encoding="utf-8")
    parsed = [parse_file(str(path))]
    check_results(parsed)  # once first, so that imports and caches are not counted
    count = 0

    def profile(frame, event, arg) -> None:
        nonlocal count
        if event == "call":
            count += 1

    sys.setprofile(profile)
    try:
        check_results(parsed)
    finally:
        sys.setprofile(None)
    return count


def test_checking_twice_the_spec_makes_about_twice_the_calls(tmp_path: Path) -> None:
    small, large = calls_to_check(tmp_path, 80), calls_to_check(tmp_path, 160)
    assert large / small < 2.1, (small, large)
