"""Safe writes: refused paths, compile checks, and an all-or-nothing swap."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from allium.generate import writer
from allium.errors import AlliumError
from allium.generate.writer import OutputCheckError, StagedOutput, UnsafePathError, recover, staging_dir


@dataclass(frozen=True)
class Area:
    """The output area of unit `orders` in package `shop` (like units.Unit.allows)."""

    name: str = "orders"

    def allows(self, path: str) -> bool:
        return path in ("shop/orders.py", "tests/test_orders.py") or path.startswith("shop/orders_")


AREA = Area()


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def output(tmp_path: Path) -> Path:
    out = tmp_path / "generated"
    (out / "shop").mkdir(parents=True)
    (out / "tests").mkdir()
    (out / "shop" / "orders.py").write_text("OLD = 1\n")
    (out / "shop" / "catalog.py").write_text("CATALOG = 1\n")
    (out / "allium.lock").write_text("{}\n")
    return out


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../../b", "shop/../shop/orders.py",
                                  "..", "", "C:/x.py", "shop\\orders.py"])
def test_traversal_and_absolute_paths_are_refused(output: Path, path: str) -> None:
    with StagedOutput(output) as staged:
        with pytest.raises(UnsafePathError) as info:
            staged.write(AREA, path, "x = 1\n")
    assert info.value.unit == "orders" and info.value.path == path
    assert "orders" in str(info.value)
    assert not (output.parent / "x").exists() and not (output.parent / "b").exists()


def test_lockfile_is_refused(output: Path) -> None:
    with StagedOutput(output) as staged:
        with pytest.raises(UnsafePathError, match="lockfile"):
            staged.write(AREA, "allium.lock", "{}")
        with pytest.raises(UnsafePathError, match="lockfile"):
            staged.write(AREA, "./allium.lock", "{}")


def test_paths_outside_the_unit_area_are_refused(output: Path) -> None:
    with StagedOutput(output) as staged:
        with pytest.raises(UnsafePathError, match="outside the unit's output area"):
            staged.write(AREA, "shop/catalog.py", "CATALOG = 2\n")
    assert (output / "shop" / "catalog.py").read_text() == "CATALOG = 1\n"


def test_symlink_escape_is_refused(output: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (output / "shop" / "orders_helpers.py").symlink_to(outside / "victim.py")
    with StagedOutput(output) as staged:
        with pytest.raises(UnsafePathError, match="symlink"):
            staged.write(AREA, "shop/orders_helpers.py", "x = 1\n")
    assert not (outside / "victim.py").exists()


def test_symlinked_folder_escape_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "generated"
    out.mkdir()
    (out / "shop").symlink_to(outside, target_is_directory=True)
    with StagedOutput(out) as staged:
        with pytest.raises(UnsafePathError, match="symlink"):
            staged.write(AREA, "shop/orders.py", "x = 1\n")
    assert list(outside.iterdir()) == []


def test_one_bad_path_stages_nothing_for_the_unit(output: Path) -> None:
    with StagedOutput(output) as staged:
        with pytest.raises(UnsafePathError):
            staged.write_unit(AREA, [("shop/orders.py", "NEW = 1\n"), ("../evil.py", "")])
        assert (staged.root / "shop" / "orders.py").read_text() == "OLD = 1\n"


def test_successful_swap_replaces_content(output: Path) -> None:
    with StagedOutput(output) as staged:
        staged.write_unit(AREA, [("shop/orders.py", "NEW = 1\n"),
                                 ("tests/test_orders.py", "def test_x():\n    assert True\n")])
        staged.write_own("allium.lock", '{"new": true}\n')
        staged.commit()
    assert _tree(output) == {
        "allium.lock": '{"new": true}\n',
        "shop/catalog.py": "CATALOG = 1\n",  # another unit's output is kept
        "shop/orders.py": "NEW = 1\n",
        "tests/test_orders.py": "def test_x():\n    assert True\n",
    }
    assert not writer.staging_dir(output).exists() and not writer.backup_dir(output).exists()
    assert not list(output.rglob("__pycache__"))


def test_unit_files_no_longer_written_are_removed(output: Path) -> None:
    (output / "shop" / "orders_old_helper.py").write_text("X = 1\n")
    with StagedOutput(output) as staged:
        staged.write_unit(AREA, [("shop/orders.py", "NEW = 1\n")])
        staged.commit()
    assert not (output / "shop" / "orders_old_helper.py").exists()
    assert (output / "shop" / "catalog.py").exists()


def test_first_run_creates_the_output(tmp_path: Path) -> None:
    out = tmp_path / "generated"
    with StagedOutput(out) as staged:
        staged.write(AREA, "shop/orders.py", "A = 1\n")
        staged.commit()
    assert _tree(out) == {"shop/orders.py": "A = 1\n"}


def test_syntax_error_aborts_with_old_output_untouched(output: Path) -> None:
    before = _tree(output)
    with StagedOutput(output) as staged:
        staged.write(AREA, "shop/orders.py", "NEW = 1\n")
        staged.write(AREA, "tests/test_orders.py", "def broken(:\n")
        with pytest.raises(OutputCheckError, match="tests/test_orders.py"):
            staged.commit()
    assert _tree(output) == before
    assert not writer.staging_dir(output).exists()


def test_exception_during_run_discards_staging(output: Path) -> None:
    before = _tree(output)
    with pytest.raises(RuntimeError):
        with StagedOutput(output) as staged:
            staged.write(AREA, "shop/orders.py", "NEW = 1\n")
            raise RuntimeError("provider failed")
    assert _tree(output) == before
    assert not writer.staging_dir(output).exists()


def test_crash_during_swap_restores_the_old_tree(output: Path, monkeypatch) -> None:
    before = _tree(output)
    real_rename = os.rename
    calls = []

    def failing_rename(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the staging -> output rename
            raise KeyboardInterrupt("interrupted mid-commit")
        return real_rename(src, dst)

    with StagedOutput(output) as staged:
        staged.write(AREA, "shop/orders.py", "NEW = 1\n")
        monkeypatch.setattr(writer.os, "rename", failing_rename)
        with pytest.raises(KeyboardInterrupt):
            staged.commit()
        monkeypatch.setattr(writer.os, "rename", real_rename)
    assert _tree(output) == before


def test_kill_between_renames_is_recovered(output: Path) -> None:
    """A process killed after the first rename: no handler ran, recover() repairs it."""
    before = _tree(output)
    staged = StagedOutput(output)
    staged.write(AREA, "shop/orders.py", "NEW = 1\n")
    os.rename(output, writer.backup_dir(output))  # step 1 done, then the process dies
    assert not output.exists()
    assert _tree(writer.backup_dir(output)) == before  # the old tree is complete meanwhile
    assert _tree(staged.root)["shop/orders.py"] == "NEW = 1\n"  # and so is the new one
    assert "restored" in recover(output)
    assert _tree(output) == before
    assert not writer.staging_dir(output).exists() and not writer.backup_dir(output).exists()


def test_kill_after_swap_before_cleanup_keeps_the_new_tree(output: Path) -> None:
    staged = StagedOutput(output)
    staged.write(AREA, "shop/orders.py", "NEW = 1\n")
    os.rename(output, writer.backup_dir(output))
    os.rename(staged.root, output)  # step 2 done, then the process dies before cleanup
    recover(output)
    assert (output / "shop" / "orders.py").read_text() == "NEW = 1\n"
    assert not writer.backup_dir(output).exists()


def test_new_run_recovers_automatically(output: Path) -> None:
    before = _tree(output)
    os.rename(output, writer.backup_dir(output))
    with StagedOutput(output) as staged:
        assert staged.recovered is not None
        assert _tree(staged.root) == before


def test_committed_output_cannot_be_reused(output: Path) -> None:
    staged = StagedOutput(output)
    staged.commit()
    with pytest.raises(Exception, match="already committed"):
        staged.write(AREA, "shop/orders.py", "x = 1\n")


# ---------------------------------------------------------------- the output folder: symlinks and locks


def test_a_symlinked_output_is_staged_where_it_points_and_stays_a_link(tmp_path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "generated"
    link.symlink_to(real, target_is_directory=True)
    for version in ("1", "2"):
        with StagedOutput(link) as staged:
            staged.write(AREA, "shop/orders.py", f"v = {version}\n")
            staged.commit()
        assert link.is_symlink() and (real / "shop" / "orders.py").read_text() == f"v = {version}\n"


def test_a_dangling_output_link_is_refused_clearly(tmp_path) -> None:
    link = tmp_path / "generated"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(AlliumError, match="is a symlink to .*nowhere, which does not exist"):
        StagedOutput(link)


def test_a_second_run_on_the_same_output_is_refused_and_the_first_keeps_its_staging(tmp_path) -> None:
    import subprocess
    import sys

    out = tmp_path / "generated"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom allium.generate.writer import StagedOutput\n"
         f"s = StagedOutput({str(out)!r})\nprint('staged', flush=True)\ntime.sleep(30)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "staged"
        staging = staging_dir(out.absolute())
        assert staging.is_dir()
        with pytest.raises(AlliumError, match="another allium run is writing"):
            StagedOutput(out)
        assert staging.is_dir()  # the second run did not clear the first one's staging
    finally:
        holder.kill()
        holder.wait()
    with StagedOutput(out) as staged:  # the lock died with its holder
        staged.commit()
