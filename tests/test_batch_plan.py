"""Planning batches: built-in and user templates, preview settings and placeholders, object_info checks, and the
preview / A-B / XY / ablation planners over a real library of real-format LoRA files."""

from __future__ import annotations

import json
import os

import pytest
from library_helpers import quick_scan, tiny

from lorawb_core.batch.planners import XY_LIMIT, Axis, plan_ab, plan_ablation, plan_previews, plan_xy
from lorawb_core.batch.server_check import check_workflow, combo_options, model_names, workflow_problems
from lorawb_core.batch.settings import (
    PreviewConfig,
    PreviewSettings,
    fill_prompt,
    load_preview_config,
    parse_size,
    save_preview_config,
)
from lorawb_core.batch.templates import BLOCK_WEIGHT_APPLY, LOAD_BY_ID, LoraUse, UserTemplate, template_for
from lorawb_core.errors import InvalidValue, ServerMismatch, TemplateError, UsageError
from lorawb_core.library.db import open_library

CKPT = PreviewConfig(defaults={"checkpoint": "tiny_sd15.safetensors"})


def classes(workflow):
    return [workflow[n]["class_type"] for n in sorted(workflow, key=int)]


def node(workflow, class_type):
    found = [n for n in workflow.values() if n["class_type"] == class_type]
    assert len(found) == 1, class_type
    return found[0]


# ---- templates ----------------------------------------------------------------------------------------------
def test_sd_template_graph_and_links():
    s = PreviewSettings(checkpoint="a.safetensors", width=512, height=768, steps=7, cfg=5.5, seed=42)
    built = template_for("sdxl").render(s, [LoraUse("SDX-CHR-001", 0.8), LoraUse("SDX-STY-002", 1.0, 0.5, "OUTD")],
                                        "red coat", "blurry")
    wf = built.workflow
    assert classes(wf) == ["CheckpointLoaderSimple", LOAD_BY_ID, BLOCK_WEIGHT_APPLY, "CLIPTextEncode",
                           "CLIPTextEncode", "EmptyLatentImage", "KSampler", "VAEDecode", "SaveImage"]
    assert wf["2"]["inputs"] == {"model": ["1", 0], "clip": ["1", 1], "lora": "SDX-CHR-001", "strength_model": 0.8,
                                 "strength_clip": 0.8}
    assert wf["3"]["inputs"] == {"model": ["2", 0], "clip": ["2", 1], "lora": "SDX-STY-002", "strength_model": 1.0,
                                 "strength_clip": 0.5, "weights_text": "OUTD"}
    assert wf["4"]["inputs"] == {"text": "red coat", "clip": ["3", 1]}
    k = node(wf, "KSampler")["inputs"]
    assert (k["model"], k["seed"], k["steps"], k["cfg"], k["positive"], k["negative"]) == (["3", 0], 42, 7, 5.5,
                                                                                          ["4", 0], ["5", 0])
    assert node(wf, "EmptyLatentImage")["inputs"] == {"width": 512, "height": 768, "batch_size": 1}
    assert node(wf, "VAEDecode")["inputs"]["vae"] == ["1", 2]
    assert built.output_node == "9" and built.group == "a.safetensors"


def test_flux_template_with_separate_loaders_and_guidance():
    s = PreviewConfig(families={"flux": {"unet": "flux1.safetensors", "clip": ["clip_l.safetensors", "t5.safetensors"],
                                         "vae": "ae.safetensors"}}).settings_for("flux")
    assert (s.cfg, s.scheduler, s.negative) == (1.0, "simple", "")  # the template's defaults
    wf = template_for("flux").render(s, [LoraUse("FLX-CHR-001")], "p", "").workflow
    assert classes(wf)[:4] == ["UNETLoader", "DualCLIPLoader", "VAELoader", LOAD_BY_ID]
    assert node(wf, "DualCLIPLoader")["inputs"] == {"clip_name1": "clip_l.safetensors", "clip_name2": "t5.safetensors",
                                                    "type": "flux"}
    guidance = [n for n, v in wf.items() if v["class_type"] == "FluxGuidance"][0]
    assert node(wf, "KSampler")["inputs"]["positive"] == [guidance, 0]
    assert "EmptySD3LatentImage" in classes(wf)
    with pytest.raises(TemplateError, match="needs a checkpoint, or a unet, two clip names"):
        template_for("flux").render(PreviewSettings(), [], "p", "")


def test_sd3_template_and_refusals():
    wf = template_for("sd3").render(PreviewSettings(checkpoint="sd3.safetensors"), [], "p", "n").workflow
    assert "EmptySD3LatentImage" in classes(wf) and LOAD_BY_ID not in classes(wf)
    with pytest.raises(TemplateError, match=r"WAN 2\.x LoRAs have no built-in workflow template \(it is a video"):
        template_for("wan")
    with pytest.raises(TemplateError, match="family is unknown"):
        template_for(None)
    with pytest.raises(TemplateError, match="No checkpoint is set"):
        template_for("sd15").render(PreviewSettings(), [], "p", "n")


def _user_workflow():
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "mine.safetensors"}},
        "10": {"class_type": BLOCK_WEIGHT_APPLY, "inputs": {"model": ["4", 0], "clip": ["4", 1], "lora": "SD1-X-1",
                                                            "weights_text": "", "strength_model": 1,
                                                            "strength_clip": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "old", "clip": ["10", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "old neg", "clip": ["10", 1]}},
        "20": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["6", 0], "guidance": 3}},
        "3": {"class_type": "KSampler", "inputs": {"seed": 1, "positive": ["20", 0], "negative": ["7", 0],
                                                   "model": ["10", 0]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0]}},
        "12": {"class_type": "CLIPTextEncode", "_meta": {"title": "style [prompt]"}, "inputs": {"text": "x"}},
    }


def test_user_template_substitutes_lora_seed_prompts_and_checkpoint():
    t = UserTemplate(_user_workflow(), "mine.json")
    s = PreviewSettings(seed=99, checkpoint="other.safetensors")
    built = t.render(s, [LoraUse("SD1-CHR-001", 0.7)], "a cat", "ugly")
    wf = built.workflow
    assert wf["10"]["class_type"] == BLOCK_WEIGHT_APPLY  # kept: every block at 1
    assert wf["10"]["inputs"]["lora"] == "SD1-CHR-001" and wf["10"]["inputs"]["strength_model"] == 0.7
    assert wf["10"]["inputs"]["weights_text"] == ""
    assert wf["3"]["inputs"]["seed"] == 99
    assert wf["12"]["inputs"]["text"] == "a cat"  # the title marker wins over following the links
    assert wf["6"]["inputs"]["text"] == "old"
    assert wf["7"]["inputs"]["text"] == "ugly"  # found through the sampler's negative link
    assert wf["4"]["inputs"]["ckpt_name"] == "other.safetensors"
    assert built.output_node == "9" and built.group == "other.safetensors"
    assert t.workflow["10"]["inputs"]["lora"] == "SD1-X-1"  # the template itself is untouched
    del t.workflow["12"]
    wf = t.render(s, [LoraUse("SD1-CHR-001", 1.0, None, "OUTD")], "dog", "n").workflow
    assert wf["6"]["inputs"]["text"] == "dog"  # through FluxGuidance's conditioning
    assert wf["10"]["inputs"]["weights_text"] == "OUTD"
    with pytest.raises(TemplateError, match="has 1 lorawb loader node"):
        t.render(s, [LoraUse("A-B-1"), LoraUse("A-B-2")], "p", "n")


def test_user_template_refusals(tmp_path):
    wf = _user_workflow()
    del wf["10"]
    with pytest.raises(TemplateError, match="has no lorawb loader node"):
        UserTemplate(wf, "t.json")
    wf = _user_workflow()
    del wf["9"]
    with pytest.raises(TemplateError, match="has no SaveImage node"):
        UserTemplate(wf, "t.json")
    with pytest.raises(TemplateError, match="is a UI workflow"):
        UserTemplate({"nodes": [], "links": []}, "ui.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(TemplateError, match="cannot read the template"):
        UserTemplate.load(bad)


# ---- settings -------------------------------------------------------------------------------------------------
def test_settings_layers_placeholders_and_file_round_trip(tmp_path):
    path = tmp_path / "preview_config.json"
    cfg = PreviewConfig(defaults={"prompt": "{triggers}, {name}, photo", "steps": 12},
                        families={"sdxl": {"checkpoint": "xl.safetensors", "width": 1024}})
    save_preview_config(cfg, path)
    back = load_preview_config(path)
    s = back.settings_for("sdxl", {"steps": "30", "seed": 5})
    assert (s.checkpoint, s.width, s.height, s.steps, s.seed) == ("xl.safetensors", 1024, 640, 30, 5)
    assert back.settings_for("sd15").checkpoint == "" and back.settings_for("sd15").steps == 12
    assert fill_prompt(s.prompt, name="red coat", triggers=["rc1", " rc2 "]) == "rc1, rc2, red coat, photo"
    assert fill_prompt(s.prompt, name="plain", triggers=[]) == "plain, photo"
    assert fill_prompt("{x} {name}", name="n", triggers=[]) == "{x} n"
    assert parse_size("768x512") == {"width": 768, "height": 512}
    assert load_preview_config(tmp_path / "none.json").defaults == {}


@pytest.mark.parametrize("raw, message", [
    ({"defaults": {"stepz": 3}}, "unknown preview setting 'stepz'"),
    ({"defaults": {"steps": "many"}}, "steps must be a whole number"),
    ({"defaults": {"width": 100}}, "multiple of 8"),
    ({"families": {"sdxx": {}}}, "unknown family 'sdxx'"),
    ({"servers": ["http://x"]}, "servers are set in the library's config.json"),
    ([], "must hold a JSON object"),
])
def test_broken_settings_files_say_what_is_wrong(tmp_path, raw, message):
    path = tmp_path / "preview_config.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(UsageError, match=message):
        load_preview_config(path)


def test_bad_size_override():
    with pytest.raises(InvalidValue, match="give WIDTHxHEIGHT"):
        parse_size("big")


# ---- object_info checks ---------------------------------------------------------------------------------------
OBJECT_INFO = {
    "CheckpointLoaderSimple": {"input": {"required": {"ckpt_name": [["tiny.safetensors", "other.safetensors"]]}}},
    "KSampler": {"input": {"required": {"seed": ["INT", {}], "sampler_name": ["COMBO", {"options": ["euler"]}],
                                        "scheduler": [["normal"]]}}},
    LOAD_BY_ID: {"input": {"required": {"lora": [["SD1-CHR-001 · a"]], "strength_model": ["FLOAT", {}]}}},
}


def test_object_info_check_names_the_missing_checkpoint_and_what_the_server_has():
    wf = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sdxl.safetensors"}},
          "2": {"class_type": "KSampler", "inputs": {"seed": 1, "sampler_name": "dpm", "scheduler": "normal"}},
          "3": {"class_type": LOAD_BY_ID, "inputs": {"lora": "SD1-CHR-001", "strength_model": 1.0}},
          "4": {"class_type": "LoraWB_BlockWeightApply", "inputs": {}}}
    problems = workflow_problems(wf, OBJECT_INFO)
    assert problems == [
        "node 1 (CheckpointLoaderSimple): ckpt_name 'sdxl.safetensors' is not on the server; it has: "
        "tiny.safetensors, other.safetensors.",
        "node 2 (KSampler): sampler_name 'dpm' is not on the server; it has: euler.",
        "node 4: the server has no LoraWB_BlockWeightApply node (install the lorawb node pack on that server).",
    ]
    with pytest.raises(ServerMismatch, match="http://127.0.0.1:1 cannot run this workflow: node 1"):
        check_workflow(wf, OBJECT_INFO, "http://127.0.0.1:1")
    wf["1"]["inputs"]["ckpt_name"] = "tiny.safetensors"
    wf["2"]["inputs"]["sampler_name"] = "euler"
    del wf["4"]
    check_workflow(wf, OBJECT_INFO)
    assert model_names(OBJECT_INFO) == ["tiny.safetensors", "other.safetensors"]
    assert combo_options(["INT", {}]) is None


# ---- planners -------------------------------------------------------------------------------------------------
@pytest.fixture
def lib(tmp_path):
    root = tmp_path / "loras"
    tiny(root / "chars/a.safetensors", "sd15", 1,
         metadata={"ss_tag_frequency": json.dumps({"d": {"redcoat": 5}})})
    tiny(root / "chars/b.safetensors", "sd15", 2)
    tiny(root / "chars/x.safetensors", "sdxl", 3)
    tiny(root / "video/w.safetensors", "wan", 4)
    gone = tiny(root / "chars/gone.safetensors", "sd15", 5)
    (root / "chars/b.preview.png").write_bytes(b"")
    db = open_library(tmp_path / "library.sqlite3")
    quick_scan(db, [root])
    os.unlink(gone)
    ids = {r["file_name"]: r["stable_id"] for r in db.query("SELECT file_name, stable_id FROM loras")}
    yield {"db": db, "root": root, "ids": ids}
    db.close()


def test_preview_plan_missing_and_the_batch_goes_on_past_bad_loras(lib):
    db, ids = lib["db"], lib["ids"]
    planned = plan_previews(db, missing=True, config=CKPT)
    keys = [i.key for i in planned.plan.items]
    assert keys == [ids["a.safetensors"], ids["x.safetensors"]]  # b has a preview, gone is gone, wan has no template
    reasons = {s.item: s.reason for s in planned.skipped}
    assert "video model family" in reasons[ids["w.safetensors"]]
    a = planned.plan.items[0]
    assert a.params["sidecar"] == str(lib["root"] / "chars/a.preview.png")
    assert a.params["prompt"] == "redcoat, a" and a.group == "tiny_sd15.safetensors"
    assert planned.plan.spec["skipped"] == [{"item": s.item, "reason": s.reason} for s in planned.skipped]
    json.dumps(planned.plan.spec)  # JSON-friendly for the queue and the panel

    planned = plan_previews(db, [ids["b.safetensors"], str(lib["root"] / "chars/gone.safetensors"), "SD1-ZZZ-404",
                                 str(lib["root"] / "chars/a.safetensors")], config=CKPT)
    assert [i.key for i in planned.plan.items] == [ids["a.safetensors"]]
    reasons = [s.reason for s in planned.skipped]  # unresolvable refs first, then LoRAs with a preview
    assert "is missing: its last known file was" in reasons[0]
    assert "No LoRA with stable ID" in reasons[1]
    assert "already has a preview" in reasons[2] and "--force" in reasons[2]
    forced = plan_previews(db, [ids["b.safetensors"]], config=CKPT, force=True)
    assert len(forced.plan.items) == 1 and forced.plan.spec["force"] is True


def test_preview_plan_by_filter_uses_the_library_search(lib):
    planned = plan_previews(lib["db"], filter_text="family=sdxl", config=CKPT)
    assert [i.key for i in planned.plan.items] == [lib["ids"]["x.safetensors"]]
    with pytest.raises(UsageError, match="'colour' is not a filter"):
        plan_previews(lib["db"], filter_text="colour=red", config=CKPT)
    with pytest.raises(UsageError, match="say which LoRAs to preview"):
        plan_previews(lib["db"], config=CKPT)


def test_xy_plan_cells_keys_and_limit(lib):
    a = lib["ids"]["a.safetensors"]
    planned = plan_xy(lib["db"], [f"{a}:0.8"], Axis.parse("strength=0,0.5,1"), Axis.parse("profile=ALL,INS,OUTD"),
                      config=CKPT)
    items = planned.plan.items
    assert [i.key for i in items[:4]] == ["x=0|y=ALL", "x=0.5|y=ALL", "x=1|y=ALL", "x=0|y=INS"]
    cell = items[4].params  # x=0.5, y=INS
    assert cell["loras"] == [{"stable_id": a, "strength_model": 0.4, "strength_clip": 0.4, "weights": "INS"}]
    assert (cell["x"], cell["y"]) == ("0.5", "INS")
    assert planned.plan.spec["x"] == {"axis": "strength", "values": ["0", "0.5", "1"]}
    seeds = plan_xy(lib["db"], [a], Axis.parse("seed=1,2"), Axis.parse(f"lora={a},{lib['ids']['b.safetensors']}"),
                    config=CKPT).plan.items
    assert [(i.params["seed"], i.params["loras"][0]["stable_id"]) for i in seeds] == [
        (1, a), (2, a), (1, lib["ids"]["b.safetensors"]), (2, lib["ids"]["b.safetensors"])]
    big = Axis("seed", tuple(str(i) for i in range(XY_LIMIT + 1)))
    with pytest.raises(UsageError, match="65 cells, over the limit of 64"):
        plan_xy(lib["db"], [a], big, config=CKPT)
    assert len(plan_xy(lib["db"], [a], big, config=CKPT, confirm=True).plan.items) == XY_LIMIT + 1
    ckpts = plan_xy(lib["db"], [a], Axis.parse("checkpoint=one.safetensors,two.safetensors"), config=CKPT)
    assert [i.group for i in ckpts.plan.items] == ["one.safetensors", "two.safetensors"]


def test_bad_axes_and_stacks_are_refused(lib):
    a = lib["ids"]["a.safetensors"]
    with pytest.raises(UsageError, match="NAME one of strength"):
        Axis.parse("colour=red")
    with pytest.raises(UsageError, match="'x' is not a number"):
        Axis.parse("strength=1,x")
    with pytest.raises(UsageError, match="mixes base model families"):
        plan_xy(lib["db"], [a, lib["ids"]["x.safetensors"]], Axis.parse("seed=1"), config=CKPT)
    planned = plan_xy(lib["db"], [a], Axis.parse("profile=ALL,NOPE_PROFILE"), config=CKPT)
    assert [i.key for i in planned.plan.items] == ["x=ALL"] and planned.skipped[0].item == "x=NOPE_PROFILE"
    with pytest.raises(UsageError, match="give --strengths"):
        plan_ab(lib["db"], [a], config=CKPT)


def test_ab_plan_is_one_row(lib):
    a = lib["ids"]["a.safetensors"]
    planned = plan_ab(lib["db"], [a], profiles=["ALL", "OUTD"], config=CKPT)
    assert planned.plan.kind == "ab" and planned.plan.spec["y"] is None
    assert [i.params["loras"][0]["weights"] for i in planned.plan.items] == ["ALL", "OUTD"]


def test_ablation_plan_reference_then_each_measured_block(lib):
    a = lib["ids"]["a.safetensors"]
    planned = plan_ablation(lib["db"], [a], config=CKPT)
    blocks = planned.plan.spec["blocks"]
    assert blocks == ["IN04", "IN05"]  # the tiny LoRA has weight in these blocks of its layout only
    assert [i.key for i in planned.plan.items] == ["ALL", *blocks]
    assert planned.plan.items[1].params["loras"][0]["weights"] == "default=1, IN04=0"
    solo = plan_ablation(lib["db"], [a], mode="solo", config=CKPT).plan.items[2]
    assert solo.params["loras"][0]["weights"] == "default=0, REST=0, IN05=1"
    assert node(solo.workflow, BLOCK_WEIGHT_APPLY)["inputs"]["weights_text"] == "default=0, REST=0, IN05=1"
