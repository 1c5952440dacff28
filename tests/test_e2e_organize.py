"""A saved ComfyUI workflow with our stable-ID node runs before and after its LoRA was organized: a real, current
ComfyUI (``COMFYUI_DIR``, the current-host suite) with the pack linked in, the loose LoRA at the top of its loras
folder organized through ``POST /api/lorawb/organize`` into its own folder, and the same prompt queued again.

    COMFYUI_DIR=/path/to/ComfyUI python -m pytest -q tests/test_e2e_organize.py
"""

from __future__ import annotations

import os
import time

import pytest
from comfy_server import run_prompt, wait_scan
from test_e2e_comfyui import comfyui  # noqa: F401 - the server fixture
from ui_helpers import http_json

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
pytestmark = pytest.mark.skipif(not COMFYUI_DIR, reason="COMFYUI_DIR is not set (a current ComfyUI checkout with its "
                                                        "requirements and comfyui-frontend-package installed)")


def test_a_saved_workflow_runs_before_and_after_organizing_its_lora(comfyui):  # noqa: F811
    url, loras = comfyui["url"], comfyui["base"] / "models" / "loras"
    wait_scan(url)
    _, page = http_json(url + "/api/lorawb/loras?q=e2e_xss")
    stable_id = page["items"][0]["stable_id"]
    prompt = {"1": {"class_type": "LoraWB_LoraInfo", "inputs": {"lora": stable_id, "width": 512, "height": 256}},
              "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 2]}}}
    status, entry = run_prompt(url, prompt)
    assert status == 200 and entry["status"]["status_str"] == "success", entry["status"]
    before = (loras / "e2e_xss.safetensors").stat()
    status, job = http_json(url + "/api/lorawb/organize", "POST", {"no_preview": True, "confirm": True})
    assert status == 202, job
    deadline = time.monotonic() + 300
    while job["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.3)
        job = http_json(f"{url}/api/lorawb/organize/{job['job']}")[1]
    assert job["state"] == "done", job
    moved = [p for p in loras.rglob("e2e_xss.safetensors")]
    assert len(moved) == 1 and moved[0].parent != loras and moved[0].stat().st_mtime_ns == before.st_mtime_ns
    _, lora = http_json(f"{url}/api/lorawb/loras/{stable_id}")
    assert lora["path"] == str(moved[0])  # the same stable ID follows the file
    status, entry = run_prompt(url, prompt)  # the saved workflow, unchanged
    assert status == 200 and entry["status"]["status_str"] == "success", entry["status"]
    assert stable_id in entry["outputs"]["1"]["text"][0]
