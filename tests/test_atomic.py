"""lorawb_core.atomic.atomic_file: whole or nothing."""

from __future__ import annotations

import pytest

from lorawb_core.atomic import atomic_file


def test_a_complete_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "report.json"
    with atomic_file(target) as fh:
        fh.write("{}")
    assert target.read_text() == "{}" and sorted(p.name for p in target.parent.iterdir()) == ["report.json"]
    with atomic_file(target, "wb") as fh:
        fh.write(b"\x89PNG")
    assert target.read_bytes() == b"\x89PNG"


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "config.json"
    target.write_text("old")
    with pytest.raises(OSError, match="No space left"), atomic_file(target) as fh:
        fh.write("half")
        raise OSError(28, "No space left on device")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["config.json"]
