"""The diffusers host on real diffusers: tiny SD 1.5, SDXL and Flux pipelines built from configs, LoRAs written by
peft + diffusers' ``save_lora_weights`` (see ``diffusers_tiny.py``; nothing is downloaded)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("peft")

from diffusers_tiny import BUILDERS, WEIGHT_ONLY_BUILDERS, write_lora  # noqa: E402

from lorawb_core.cache import LoraCache  # noqa: E402
from lorawb_core.diffusers_host import DiffusersHost, LoraSpec  # noqa: E402
from lorawb_core.errors import IncompatibleStack, LoraMissing  # noqa: E402
from lorawb_core.inspection import inspect_structure  # noqa: E402

PROFILES = {"sd15": "OUTD", "sdxl": "BASE=0.5, IN04-IN08=0, M00=2, default=1",
            "flux": "CLIP=0.25, D00=0, D01=1.5, S00=-1, default=0.5", "sd3": "J00=0, J01=1.5", "wan": "B00=-1, B01=0.25"}
DENOISER = {"sd15": "unet", "sdxl": "unet", "flux": "transformer"}


@pytest.fixture(scope="module")
def loras(tmp_path_factory):
    d = tmp_path_factory.mktemp("loras")
    return {fam: (write_lora(fam, d, f"{fam}_a", seed=1), write_lora(fam, d, f"{fam}_b", seed=7))
            for fam in {**BUILDERS, **WEIGHT_ONLY_BUILDERS}}


class _Pipes(dict):
    def __missing__(self, family):
        self[family] = {**BUILDERS, **WEIGHT_ONLY_BUILDERS}[family]()
        return self[family]


@pytest.fixture(scope="module")
def pipes():
    return _Pipes()


def _image(pipe, seed: int = 3):
    return pipe("a red cube", num_inference_steps=2, height=16, width=16, output_type="np",
                generator=torch.Generator().manual_seed(seed)).images


def _weights(pipe, components=None):
    comps = components or [c for c in ("unet", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3")
                           if getattr(pipe, c, None) is not None]
    return {(c, k): v.detach().clone() for c in comps for k, v in getattr(pipe, c).state_dict().items()}


def _module(pipe, key: str):
    comp, _, path = key.partition(".")
    return comp, getattr(pipe, comp).get_submodule(path)


def _expected(pipe, base, entries):
    """{(component, module): W + Σ s·w(block)·ΔW} from the base weights and the files, blocks from our report."""
    out = {}
    for path, strength, clip, weights in entries:
        an = inspect_structure(path)
        from safetensors.torch import load_file

        sd = load_file(str(path))
        for m in an.report.modules:
            up = next(sd[k] for k in m.tensor_keys if k.endswith(("lora.up.weight", "lora_B.weight", "up.weight")))
            down = next(sd[k] for k in m.tensor_keys if k.endswith(("lora.down.weight", "lora_A.weight",
                                                                     "down.weight")))
            comp, mod = _module(pipe, m.key)
            s = strength if comp in ("unet", "transformer") else clip
            w = weights.get(m.block, 1.0) if m.block else 1.0
            key = (comp, m.key)
            start = out.get(key, (mod, base[(comp, m.key.partition(".")[2] + ".weight")]))[1]
            out[key] = (mod, start + s * w * (up.double() @ down.double()).float() * m.scale)
    return out


@pytest.mark.parametrize("family", ["sd15", "sdxl", "flux", "sd3", "wan"])
def test_fused_weights_are_w_plus_s_w_block_delta(family, pipes, loras):
    pipe, (a, _) = pipes[family], loras[family]
    host = DiffusersHost(pipe, cache=LoraCache(64 << 20))
    base = _weights(pipe)
    applied = host.apply([LoraSpec(str(a), 0.8, 0.6, PROFILES[family])], fuse=True)
    weights = applied.loras[0].weights
    assert len(set(weights.values())) > 1, weights  # really per-block
    expected = _expected(pipe, base, [(a, 0.8, 0.6, weights)])
    assert len(expected) >= 12
    for (comp, key), (mod, want) in expected.items():
        torch.testing.assert_close(mod.weight.detach(), want, atol=1e-6, rtol=0, msg=f"{comp}: {key}")
    assert applied.loras[0].components == (["unet", "text_encoder", "text_encoder_2"] if family == "sdxl" else
                                            ["transformer"] if family in WEIGHT_ONLY_BUILDERS else
                                            [DENOISER[family], "text_encoder"])
    host.unload()
    after = _weights(pipe)
    assert all(torch.equal(base[k], after[k]) for k in base), "unload must restore the exact base weights"


@pytest.mark.parametrize("family", ["sd15", "flux"])
def test_unfused_deltas_and_exact_unload(family, pipes, loras):
    from peft.tuners.tuners_utils import BaseTunerLayer

    pipe, (a, _) = pipes[family], loras[family]
    host = DiffusersHost(pipe, cache=LoraCache(64 << 20))
    base = _weights(pipe)
    applied = host.apply([LoraSpec(str(a), 0.5, 1.25, PROFILES[family])])
    expected = _expected(pipe, base, [(a, 0.5, 1.25, applied.loras[0].weights)])
    for (comp, key), (mod, want) in expected.items():
        assert isinstance(mod, BaseTunerLayer)
        got = mod.get_base_layer().weight + mod.get_delta_weight(applied.loras[0].adapter)
        torch.testing.assert_close(got.detach(), want, atol=1e-6, rtol=0, msg=f"{comp}: {key}")
    host.unload()
    after = _weights(pipe)
    assert set(after) == set(base) and all(torch.equal(base[k], after[k]) for k in base)


def test_stack_of_two_is_the_sum(pipes, loras):
    pipe, (a, b) = pipes["sd15"], loras["sd15"]
    host = DiffusersHost(pipe, cache=LoraCache(64 << 20))
    base = _weights(pipe)
    applied = host.apply([LoraSpec(str(a), 0.7, weights="OUTD"), LoraSpec(str(b), -0.4, 0.3, "INS")], fuse=True)
    wa, wb = applied.loras[0].weights, applied.loras[1].weights
    assert wa != wb
    expected = _expected(pipe, base, [(a, 0.7, 0.7, wa), (b, -0.4, 0.3, wb)])
    for (comp, key), (mod, want) in expected.items():
        torch.testing.assert_close(mod.weight.detach(), want, atol=1e-6, rtol=0, msg=f"{comp}: {key}")
    host.unload()


@pytest.mark.parametrize("family", ["sd15", "sdxl", "flux"])
def test_uniform_equals_diffusers_own_and_strength_zero_is_base(family, pipes, loras):
    pipe, (a, _) = pipes[family], loras[family]
    host = DiffusersHost(pipe, cache=LoraCache(64 << 20))
    base_img = _image(pipe)
    host.apply([LoraSpec(str(a), 0.0)])
    np.testing.assert_array_equal(_image(pipe), base_img)
    host.apply([LoraSpec(str(a), 0.7)])  # swap: unloads the strength-0 stack first
    ours = _image(pipe)
    host.unload()
    pipe.load_lora_weights(str(a), adapter_name="theirs")
    pipe.set_adapters(["theirs"], adapter_weights=[0.7])
    theirs = _image(pipe)
    pipe.unload_lora_weights()
    assert np.abs(ours - base_img).max() > 1e-3  # the LoRA does something
    np.testing.assert_allclose(ours, theirs, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(_image(pipe), base_img)


def test_missing_lora_errors_or_falls_back(pipes, loras, tmp_path):
    pipe = pipes["sd15"]
    host = DiffusersHost(pipe, cache=LoraCache(64 << 20))
    gone = str(tmp_path / "gone.safetensors")
    with pytest.raises(LoraMissing, match="does not exist"):
        host.apply([LoraSpec(gone)])
    applied = host.apply([LoraSpec(gone), LoraSpec(str(loras["sd15"][0]), 0.5)], fallback=True)
    assert [x.path for x in applied.loras] == [str(loras["sd15"][0])]
    assert applied.fallback and "gone.safetensors" in applied.fallback[0] and "fallback" in applied.fallback[0]
    applied = host.apply([LoraSpec(gone)], fallback=True)
    assert applied.base_only and applied.to_dict()["base_only"] is True
    host.unload()


def test_gate_refuses_other_family_and_foreign_profile(pipes, loras):
    host = DiffusersHost(pipes["sd15"], cache=LoraCache(64 << 20))
    with pytest.raises(IncompatibleStack) as err:
        host.apply([LoraSpec(str(loras["sdxl"][0]))])
    assert "sdxl LoRA" in str(err.value) and "sd15" in str(err.value)
    with pytest.raises(IncompatibleStack, match="block weights cannot map"):
        host.apply([LoraSpec(str(loras["sd15"][0]), weights="D00=0.5, S01=1")])
    assert host.applied is None and not pipes["sd15"].get_list_adapters()


def test_shared_cache_serves_the_second_apply_untouched(pipes, loras):
    cache = LoraCache(64 << 20)
    host = DiffusersHost(pipes["sd15"], cache=cache)
    a = str(loras["sd15"][0])
    host.apply([LoraSpec(a, 1.0, weights="OUTD")])
    cached = {k: v.clone() for k, v in cache.get(a).items()}
    host.apply([LoraSpec(a, 1.0, weights="INS")])
    stats = cache.stats()
    assert stats.misses == 1 and stats.hits >= 2
    assert all(torch.equal(cached[k], v) for k, v in cache.get(a).items()), "the cached state dict was modified"
    host.unload()


def test_spec_parsing():
    assert LoraSpec.parse("SD1-CHR-001:0.8@OUTD") == LoraSpec("SD1-CHR-001", 0.8, None, "OUTD")
    assert LoraSpec.parse("/x/a:b.safetensors") == LoraSpec("/x/a:b.safetensors", 1.0, None, None)
    assert LoraSpec.parse("/x/a.safetensors:-0.5") == LoraSpec("/x/a.safetensors", -0.5, None, None)
    assert LoraSpec.from_dict({"brand_id": "acme", "weight": 0.6, "type": "lora"}) == LoraSpec("acme", 0.6)
