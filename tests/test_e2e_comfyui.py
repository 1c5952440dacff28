"""End to end in a real, current ComfyUI (``COMFYUI_DIR``; skipped when unset): the pack is linked into a temporary
``custom_nodes/`` under a folder name that is not the project's (nothing may hard-code it), ComfyUI runs with
``--cpu`` on a free port, and headless Chromium opens its frontend, opens the lorawb sidebar tab through its command
and checks that the library list renders (the XSS fixture as text), that a LoRA's details draw one bar per block,
and, when the pack's nodes are installed, that "+ Load node" puts a filled-in node into the graph.

    COMFYUI_DIR=/path/to/ComfyUI python -m pytest -q tests/test_e2e_comfyui.py -s
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from comfy_server import run_prompt, start_comfyui, wait_scan
from library_helpers import tiny
from ui_helpers import CHROMIUM, CHROMIUM_ARGS, http_json

from lorawb_core.layouts import get_layout

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
pytestmark = [
    pytest.mark.skipif(not COMFYUI_DIR, reason="COMFYUI_DIR is not set (a current ComfyUI checkout with its "
                                               "requirements and comfyui-frontend-package installed)"),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed"),
]
PACK_FOLDER = "comfyui-lora-weights-builder-e2e"
XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def comfyui(tmp_path_factory):
    if not (Path(COMFYUI_DIR) / "main.py").is_file():
        pytest.skip(f"COMFYUI_DIR={COMFYUI_DIR} holds no ComfyUI main.py")
    base = tmp_path_factory.mktemp("comfy")
    loras = base / "models" / "loras"
    tiny(loras / "characters" / "e2e_character.safetensors", "sd15", 1)
    tiny(loras / "styles" / "e2e_flux_style.safetensors", "flux", 2)
    tiny(loras / "e2e_xss.safetensors", "sdxl", 3, metadata={"ss_output_name": XSS})
    with start_comfyui(base, pack_folder=PACK_FOLDER, env={"LORAWB_DB": ""}) as server:
        yield {"url": server.url, "base": base, "log": server.log, "proc": server.proc}


def test_routes_are_served_bare_and_under_api(comfyui):
    ours = [line for line in comfyui["log"].read_text().splitlines() if PACK_FOLDER in line]
    assert ours and not any("IMPORT FAILED" in line or "Cannot import" in line for line in ours), ours
    status, info = http_json(comfyui["url"] + "/api/lorawb/info")
    assert status == 200 and info["roots"] and info["roots"][0].endswith(os.path.join("models", "loras"))
    assert http_json(comfyui["url"] + "/lorawb/layouts/flux_dit_61")[1]["count"] == 61
    scan = wait_scan(comfyui["url"])
    assert scan["state"] == "done" and scan["summary"]["files"] == 3, scan
    status, ext = http_json(comfyui["url"] + "/extensions")
    assert f"/extensions/{PACK_FOLDER}/lorawb.js" in ext


def test_sidebar_tab_opens_and_the_list_renders(comfyui, tmp_path):
    from playwright.sync_api import sync_playwright

    url = comfyui["url"]
    wait_scan(url)
    nodes = http_json(url + "/object_info")[1]
    have_nodes = "LoraWB_LoadLoraById" in nodes
    errors: list[str] = []
    alerts: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        console: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.on("dialog", lambda d: (alerts.append(d.message), d.dismiss()))
        page.goto(url)
        try:
            page.wait_for_function("() => window.lorawb?.session && window.comfyAPI?.app?.app?.extensionManager",
                                   timeout=120_000)
        except Exception as exc:
            page.screenshot(path=str(tmp_path / "comfyui-timeout.png"))
            raise AssertionError("the lorawb extension did not set up:\n"
                                 + "\n".join(console[-40:] + errors)) from exc
        page.evaluate("() => window.comfyAPI.app.app.extensionManager.command.execute("
                      "'Workspace.ToggleSidebarTab.lorawb')")
        page.wait_for_selector(".lwb .lwb-row .lwb-row-name:not(:empty)", timeout=60_000)
        page.wait_for_function("() => document.querySelectorAll('.lwb-row:not(.is-loading)').length === 3")
        names = page.eval_on_selector_all(".lwb-row .lwb-row-name", "els => els.map(e => e.textContent)")
        assert sorted(names) == sorted(["e2e_character", "e2e_flux_style", XSS]), names
        assert page.locator(".lwb img").count() == 0
        page.locator(".lwb-row", has_text="e2e_flux_style").click()
        page.wait_for_selector(".lwb-graph .lwb-bar")
        assert page.locator(".lwb-graph .lwb-bar").count() == len(get_layout("flux_dit_61").blocks)
        if have_nodes:
            before = page.evaluate("() => window.comfyAPI.app.app.graph._nodes.length")
            page.click("text=+ Load node")
            page.wait_for_function("n => window.comfyAPI.app.app.graph._nodes.length === n + 1", arg=before)
            node = page.evaluate("""() => { const g = window.comfyAPI.app.app.graph;
                const n = g._nodes[g._nodes.length - 1];
                return {type: n.type, lora: n.widgets.find(w => w.name === 'lora')?.value}; }""")
            assert node["type"] == "LoraWB_LoadLoraById" and node["lora"].startswith("FLX-"), node
            page.click("text=+ Block-weight pair")
            page.wait_for_function("n => window.comfyAPI.app.app.graph._nodes.length === n + 3", arg=before)
            pair = page.evaluate("""() => { const g = window.comfyAPI.app.app.graph;
                const apply = g._nodes.find(n => n.type === 'LoraWB_BlockWeightApply');
                const select = g._nodes.find(n => n.type === 'LoraWB_ProfileSelect');
                const slot = apply.findInputSlot('weights');
                const link = g.links[apply.inputs[slot].link] ?? g.links.get?.(apply.inputs[slot].link);
                return {lora: apply.widgets.find(w => w.name === 'lora').value, from: link?.origin_id,
                        fromSlot: link?.origin_slot, select: select.id}; }""")
            assert pair["lora"].startswith("FLX-") and pair["from"] == pair["select"] and pair["fromSlot"] == 0, pair
            dropped = page.evaluate("""() => { const app = window.comfyAPI.app.app;
                const canvas = app.canvasEl ?? app.canvas.canvas; const r = canvas.getBoundingClientRect();
                const dt = new DataTransfer();
                dt.setData('application/x-lorawb', JSON.stringify({kind: 'load', stable_id: 'SD1-CHR-001',
                                                                   name: 'e2e_character'}));
                const at = {bubbles: true, cancelable: true, dataTransfer: dt, clientX: r.left + 200,
                            clientY: r.top + 500};
                const over = new DragEvent('dragover', at); canvas.dispatchEvent(over);
                canvas.dispatchEvent(new DragEvent('drop', at));
                const n = app.graph._nodes[app.graph._nodes.length - 1];
                return {accepted: over.defaultPrevented, type: n.type,
                        lora: n.widgets.find(w => w.name === 'lora')?.value}; }""")
            assert dropped == {"accepted": True, "type": "LoraWB_LoadLoraById",
                               "lora": "SD1-CHR-001 · e2e_character"}, dropped
        shot = tmp_path / "comfyui-sidebar.png"
        page.screenshot(path=str(shot))
        print(f"screenshot: {shot} (lorawb nodes installed: {have_nodes})")
        browser.close()
    assert not alerts, alerts
    assert not [e for e in errors if "lorawb" in e.lower() or "lwb" in e], errors


def test_a_queued_workflow_runs_our_node_through_comfyuis_executor(comfyui):
    """/prompt with LoRA Info → PreviewImage: ComfyUI's own validation (a saved label whose name part is stale still
    validates: the stable ID counts) and executor run the node; an unknown ID fails with our message."""
    url = comfyui["url"]
    wait_scan(url)
    _, page = http_json(url + "/api/lorawb/loras?q=e2e_character")
    stable_id = page["items"][0]["stable_id"]
    prompt = {"1": {"class_type": "LoraWB_LoraInfo",
                    "inputs": {"lora": f"{stable_id} · the name it had when the workflow was saved",
                               "width": 512, "height": 256}},
              "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 2]}}}
    status, entry = run_prompt(url, prompt)
    assert status == 200, entry
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert entry["outputs"]["2"]["images"], entry["outputs"]
    assert "sd15" in entry["outputs"]["1"]["text"][0]  # the node's UI text reached the history
    prompt["1"]["inputs"]["lora"] = "SD1-ZZZ-404"
    status, entry = run_prompt(url, prompt)
    assert status == 200 and entry["status"]["status_str"] == "error"
    messages = json.dumps(entry["status"]["messages"])
    assert "SD1-ZZZ-404" in messages and "No LoRA with stable ID" in messages
    prompt["1"]["inputs"]["lora"] = "not an id at all"
    status, body = run_prompt(url, prompt)
    assert status == 400 and "stable ID" in json.dumps(body["node_errors"])  # refused by validation, not run


def load_saved_workflow(url: str, nodes: list[dict], script: str):
    """Load a saved (UI-format) workflow of ``nodes`` into ComfyUI's frontend in Chromium; what ``script`` (a
    function body that sees ``app``) returns after the load."""
    from playwright.sync_api import sync_playwright

    workflow = {"last_node_id": max(n["id"] for n in nodes), "last_link_id": 0, "links": [], "groups": [],
                "config": {}, "extra": {}, "version": 0.4, "nodes": nodes}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url)
        page.wait_for_function("() => window.lorawb?.session && window.comfyAPI?.app?.app?.graph", timeout=120_000)
        got = page.evaluate("async (wf) => { const app = window.comfyAPI.app.app; await app.loadGraphData(wf);"
                            + script + "}", workflow)
        browser.close()
    return got


def test_a_block_weight_apply_saved_with_one_strength_loads_it_into_both(comfyui, tmp_path):
    """A workflow saved when Block Weight Apply had one `strength` widget: the frontend fills widgets by position, so
    strength_model takes it, and our extension gives strength_clip the same value (the old meaning)."""
    url = comfyui["url"]
    wait_scan(url)
    if "LoraWB_BlockWeightApply" not in http_json(url + "/object_info")[1]:
        pytest.skip("the pack's nodes are not installed in this ComfyUI")
    _, page_data = http_json(url + "/api/lorawb/loras?q=e2e_character")
    label = f"{page_data['items'][0]['stable_id']} · e2e_character"

    def node(node_id, values):
        return {"id": node_id, "type": "LoraWB_BlockWeightApply", "pos": [100, 100 + 300 * node_id],
                "size": [400, 200], "flags": {}, "order": node_id, "mode": 0, "inputs": [], "outputs": [],
                "properties": {}, "widgets_values": values}

    got = load_saved_workflow(url, [node(1, [label, "INS", 0.7]), node(2, [label, "INS", 0.6, 0.2])], """
        const value = (n, name) => n.widgets.find(w => w.name === name)?.value;
        return app.graph._nodes.map(n => [n.id, value(n, 'strength_model'), value(n, 'strength_clip')])
            .sort((a, b) => a[0] - b[0]);""")
    assert got == [[1, 0.7, 0.7], [2, 0.6, 0.2]], got


def test_a_compose_node_saved_before_hooks_gains_the_output_and_keeps_its_widgets(comfyui):
    """A Multi-LoRA Compose saved with three outputs (MODEL, CLIP, report) and two widgets: the frontend copies the
    saved outputs over the node's current ones (LiteGraph's cloneObject into the existing list), so the appended HOOKS
    stays and the saved slots keep their numbers; the saved widget values stay where they were and the new widgets
    (schedule, steps) take their defaults."""
    url = comfyui["url"]
    if "LoraWB_MultiLoraCompose" not in http_json(url + "/object_info")[1]:
        pytest.skip("the pack's nodes are not installed in this ComfyUI")
    outputs = [{"name": n, "type": t, "links": None} for n, t in (("MODEL", "MODEL"), ("CLIP", "CLIP"),
                                                                     ("report", "STRING"))]
    inputs = [{"name": n, "type": t, "link": None} for n, t in (("model", "MODEL"), ("stack", "LORAWB_STACK"),
                                                                   ("clip", "CLIP"))]
    node = {"id": 1, "type": "LoraWB_MultiLoraCompose", "pos": [100, 100], "size": [400, 200], "flags": {},
            "order": 0, "mode": 0, "inputs": inputs, "outputs": outputs, "properties": {},
            "widgets_values": [3.5, False]}
    got = load_saved_workflow(url, [node], """
        const n = app.graph._nodes[0];
        return {outputs: n.outputs.map(o => [o.name, o.type]),
                widgets: Object.fromEntries(n.widgets.map(w => [w.name, w.value]))};""")
    assert got["outputs"] == [["MODEL", "MODEL"], ["CLIP", "CLIP"], ["report", "STRING"], ["HOOKS", "HOOKS"]], got
    assert got["widgets"] == {"warn_block_strength": 3.5, "check_directions": False, "schedule": "patch model",
                              "steps": 0}, got
