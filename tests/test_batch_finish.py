"""Finishers on real PNG files (written by Pillow here, as ComfyUI's SaveImage writes them, with a ``prompt`` text
chunk): preview sidecars (atomic, never over an existing preview without force), labelled grids with failed cells
drawn as such and every cell kept, the ablation report's per-block scores, PNG metadata."""

from __future__ import annotations

import json
import os

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from lorawb_core.batch.grid import WRAP, ablation_report, mean_abs_difference, render_grid, write_report
from lorawb_core.batch.images import finish_previews, save_png, text_chunks
from lorawb_core.batch.work import BatchPlan, ItemResult, WorkItem

SIZE = (64, 48)


def comfy_png(path, color, size=SIZE):
    """A PNG as ComfyUI's SaveImage writes it: RGB with the API workflow in a ``prompt`` text chunk."""
    info = PngInfo()
    info.add_text("prompt", json.dumps({"1": {"class_type": "KSampler", "inputs": {}}}))
    Image.new("RGB", size, color).save(path, pnginfo=info)
    return path


def item(key, **params):
    return WorkItem(key=key, workflow={"1": {"class_type": "SaveImage", "inputs": {}}}, output_node="1", label=key,
                    params={"width": SIZE[0], "height": SIZE[1], **params})


def test_preview_sidecars_atomic_and_never_over_an_existing_one(tmp_path):
    loras = tmp_path / "loras"
    loras.mkdir()
    existing = loras / "b.preview.png"
    existing.write_bytes(b"user's own preview")
    plan = BatchPlan("preview", "previews", {"kind": "preview", "force": False}, (
        item("A", stable_id="A", sidecar=str(loras / "a.preview.png")),
        item("B", stable_id="B", sidecar=str(existing)),
        item("C", stable_id="C", sidecar=str(loras / "c.preview.png")),
        item("D", stable_id="D", sidecar=str(tmp_path / "deleted_folder" / "d.preview.png"))))
    results = [ItemResult("A", (comfy_png(tmp_path / "a.png", (200, 0, 0)),)),
               ItemResult("B", (comfy_png(tmp_path / "b.png", (0, 200, 0)),)),
               ItemResult("C", error="ComfyUI: node 2 lora: LoRA C is missing"),
               ItemResult("D", (comfy_png(tmp_path / "d.png", (0, 0, 200)),))]
    out = finish_previews(plan, results)
    assert out[0].path == str(loras / "a.preview.png") and out[0].error is None
    assert "exists and was kept; use --force" in out[1].error and existing.read_bytes() == b"user's own preview"
    assert out[2].error == "C: no preview written (ComfyUI: node 2 lora: LoRA C is missing)."
    assert "folder" in out[3].error and "is gone" in out[3].error
    with Image.open(loras / "a.preview.png") as im:
        assert im.size == SIZE and im.getpixel((0, 0)) == (200, 0, 0)
    chunks = text_chunks(loras / "a.preview.png")
    assert json.loads(chunks["prompt"]) == {"1": {"class_type": "SaveImage", "inputs": {}}}  # the item's workflow
    meta = json.loads(chunks["lorawb"])
    assert meta["key"] == "A" and meta["spec"] == {"kind": "preview", "force": False}
    assert sorted(os.listdir(loras)) == ["a.preview.png", "b.preview.png"]  # no temporary files left
    forced = finish_previews(plan, results, force=True)
    assert forced[1].path == str(existing) and existing.read_bytes().startswith(b"\x89PNG")


def test_a_failed_save_leaves_no_partial_file(tmp_path):
    class Exploding:
        def save(self, fh, **_):
            fh.write(b"\x89PNG partial")
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        save_png(Exploding(), tmp_path / "x.png", {})
    assert os.listdir(tmp_path) == []


def _grid_plan(xs, ys):
    items = tuple(item(f"x={x}|y={y}", x=x, y=y) for y in ys for x in xs)
    return BatchPlan("xy", "SD1-CHR-001: strength by profile",
                     {"kind": "xy", "x": {"axis": "strength", "values": xs}, "y": {"axis": "profile", "values": ys}},
                     items)


def test_grid_places_cells_by_axis_values_and_draws_failures(tmp_path):
    xs, ys = ["0", "0.5", "1"], ["ALL", "INS", "OUTD"]
    plan = _grid_plan(xs, ys)
    colors = {}
    results = []
    for n, it in enumerate(plan.items):
        if it.key == "x=0.5|y=INS":
            results.append(ItemResult(it.key, error="prompt rejected: node 3 bad value"))
            continue
        colors[it.key] = (20 * n, 255 - 20 * n, 90)
        results.append(ItemResult(it.key, (comfy_png(tmp_path / f"{n}.png", colors[it.key]),)))
    outcome = render_grid(plan, list(reversed(results)), tmp_path / "out" / "grid.png")  # result order is irrelevant
    assert outcome.failed == 1 and len(outcome.cells) == 9
    failed = [c for c in outcome.cells if c.error]
    assert failed[0].key == "x=0.5|y=INS" and failed[0].image is None
    kept = sorted(os.listdir(tmp_path / "out" / "grid_cells"))
    assert len(kept) == 8 and "x=0_y=ALL.png" in kept
    with Image.open(tmp_path / "out" / "grid.png") as im:
        grid = im.convert("RGB")
        chunks = dict(im.text)
    cells = {c.key: c for c in outcome.cells}
    # each kept cell is the cell's image with its job spec; the sheet holds it in its row and column, in order
    with Image.open(cells["x=1|y=OUTD"].image) as im:
        assert im.getpixel((5, 5)) == colors["x=1|y=OUTD"]
        assert json.loads(im.text["lorawb"])["params"]["x"] == "1" and "prompt" in im.text
    found = _locate(grid, colors)
    assert [k for k, _ in sorted(found.items(), key=lambda kv: (kv[1][1], kv[1][0]))] == [
        k for k in (f"x={x}|y={y}" for y in ys for x in xs) if k != "x=0.5|y=INS"]
    meta = json.loads(chunks["lorawb"])
    assert meta["spec"]["y"]["values"] == ys and len(meta["cells"]) == 9
    assert set(json.loads(chunks["lorawb_workflows"])) == {i.key for i in plan.items}


def _locate(image, colors):
    """The top-left corner of each colour block on the sheet (exact pixel match)."""
    px = image.load()
    found = {}
    for y in range(0, image.height, 2):
        for x in range(0, image.width, 2):
            for key, color in colors.items():
                if key not in found and px[x, y] == color:
                    found[key] = (x, y)
    assert len(found) == len(colors), set(colors) - set(found)
    return found


def _ablation(tmp_path, blocks, shift):
    items = tuple(item(k, x=k) for k in ["ALL", *blocks])
    plan = BatchPlan("ablation", "SD1-CHR-001: block ablation (mute)",
                     {"kind": "ablation", "mode": "mute", "blocks": blocks, "x": {"axis": "block",
                                                                                  "values": ["ALL", *blocks]}},
                     items)
    results = [ItemResult("ALL", (comfy_png(tmp_path / "ref.png", (100, 100, 100)),))]
    for b in blocks:
        if b in shift:
            results.append(ItemResult(b, (comfy_png(tmp_path / f"{b}.png", tuple(100 + shift[b] for _ in "rgb")),)))
        else:
            results.append(ItemResult(b, error="server died"))
    return plan, results


def test_ablation_scores_per_block_and_report(tmp_path):
    blocks = ["IN04", "IN05", "OUT03"]
    plan, results = _ablation(tmp_path, blocks, {"IN04": 30, "IN05": 5})
    report = ablation_report(plan, results)
    assert [(s.block, s.score, s.error) for s in report.scores] == [("IN04", 30.0, None), ("IN05", 5.0, None),
                                                                   ("OUT03", None, "server died")]
    lines = report.text().splitlines()
    assert lines[2].split() == ["IN04", "30.000"] and lines[3].split() == ["IN05", "5.000"]
    assert lines[4].split()[:2] == ["OUT03", "failed"]
    path = write_report(report, tmp_path / "r" / "grid.ablation.json")
    assert json.loads(path.read_text())["scores"][0] == {"block": "IN04", "score": 30.0, "error": None}


def test_ablation_without_reference_and_wrapped_grid(tmp_path):
    blocks = [f"B{i:02d}" for i in range(WRAP + 5)]
    plan, results = _ablation(tmp_path, blocks, {b: i for i, b in enumerate(blocks)})
    results[0] = ItemResult("ALL", error="boom")
    report = ablation_report(plan, results)
    assert all(s.score is None and "the all-blocks image failed (boom)" in s.error for s in report.scores)
    outcome = render_grid(plan, results, tmp_path / "abl.png")
    with Image.open(tmp_path / "abl.png") as im:
        assert im.width < (SIZE[0] + 8) * (WRAP + 1) + 8  # wrapped into rows of WRAP columns
    assert outcome.failed == 1


def test_mean_abs_difference_is_per_pixel_and_channel():
    a = Image.new("RGB", (4, 4), (10, 20, 30))
    b = Image.new("RGB", (4, 4), (13, 20, 24))
    assert mean_abs_difference(a, b) == pytest.approx((3 + 0 + 6) / 3)
    assert mean_abs_difference(a, a) == 0.0
