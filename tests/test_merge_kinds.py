"""lorawb merge on the module kinds that are not plain low-rank factors, each on a file written by the real library:
bias deltas (LyCORIS full ``diff_b``, PEFT ``lora_B.bias``) and norm diffs (LyCORIS ``w_norm``/``b_norm``) carried
through exactly, and LoHa/LoKr 3×3 convolutions written back as a proper 4-D kohya LoCon ``lora_down``."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lycoris")

from safetensors.torch import load_file  # noqa: E402

from lorawb_core.inspection import inspect_structure  # noqa: E402
from lorawb_core.merge import RankRule, merge_loras  # noqa: E402
from lorawb_core.merge.plan import _conv_shapes  # noqa: E402

try:
    from tests import real_writers as rw
except ImportError:  # pragma: no cover - run from tests/
    import real_writers as rw

# two resnets (3×3 convs) and a 1×1-conv / linear mix: small, every LoHa/LoKr conv shape present
CONV_PRESET = dict(enable_conv=True, use_fnmatch=True, unet_target_module=[], text_encoder_target_module=[],
                   text_encoder_target_name=[],
                   unet_target_name=["down_blocks.1.resnets.0.conv1", "down_blocks.1.resnets.0.conv2",
                                     "up_blocks.1.resnets.0.conv1", "*attentions.0.proj_in"])


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the dense reference math (conftest.py)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("merge_kinds")
    attn_mlp = dict(rw.LYCORIS_ALGOS["dora"][1])  # attention + MLP blocks (their norms with train_norm)
    specs = {"loha": dict(algo="loha", seed=11, preset=CONV_PRESET),
             "lokr": dict(algo="lokr", factor=4, seed=12, preset=CONV_PRESET),
             "full": dict(algo="full", seed=13, train_text_encoder=True),  # alone its few modules name no family
             "norm1": dict(algo="lora", train_norm=True, seed=14, preset=attn_mlp),
             "norm2": dict(algo="lora", train_norm=True, seed=15, preset=attn_mlp)}
    out = {name: rw.write_lycoris(base / name, weight_name=f"{name}.safetensors", dtype=torch.float32,
                                  **{"train_text_encoder": False, **kw}).path for name, kw in specs.items()}
    out["bias"] = rw.write_peft_sd15(base / "bias", train_text_encoder=False, key_style="peft", lora_bias=True,
                                     weight_name="bias.safetensors").path
    return out


def _modules(path: Path):
    return {m.adapter.module: m for m in inspect_structure(path).modules}


def test_norm_diffs_are_summed_exactly_and_kept_as_norm_diffs(written, tmp_path):
    out = tmp_path / "norms.safetensors"
    merge_loras([f"{written['norm1']}:0.5", f"{written['norm2']}:-0.25"], out, dtype="fp32")
    a, b, got = load_file(str(written["norm1"])), load_file(str(written["norm2"])), load_file(str(out))
    norms = [k for k in a if k.endswith((".w_norm", ".b_norm"))]
    assert len(norms) > 20 and any(k.endswith(".b_norm") for k in norms)
    for k in norms:
        want = 0.5 * a[k].double() - 0.25 * b[k].double()
        assert torch.allclose(got[k].double(), want, rtol=1e-6, atol=1e-7), k
    assert not [k for k in got if ".norm" in k and "lora_" in k.rsplit(".", 2)[-2]]  # no norm became a LoRA
    assert _modules(out)[norms[0].rsplit(".", 1)[0]].adapter.name == "norm"


def test_bias_deltas_are_summed_exactly(written, tmp_path):
    out = tmp_path / "bias.safetensors"
    merge_loras([f"{written['bias']}:0.7", f"{written['full']}:-1.5"], out, dtype="fp32")
    want: dict[str, torch.Tensor] = {}
    for name, strength, param in (("bias", 0.7, "up_bias"), ("full", -1.5, "diff_b")):
        tensors = load_file(str(written[name]))
        for m in _modules(written[name]).values():
            if param in m.adapter.params:
                scale = m.adapter.scale() if param == "up_bias" else 1.0
                t = strength * scale * tensors[m.adapter.params[param].key].double()
                want[str(m.target)] = want[str(m.target)] + t if str(m.target) in want else t
    got = load_file(str(out))
    by_target = {str(m.target): k for k, m in _modules(out).items()}
    assert len(want) > 128  # every PEFT module and the full file's biased projections (one target in both)
    for target, t in want.items():
        key = by_target[target]
        assert torch.allclose(got[f"{key}.diff_b"].double(), t, rtol=1e-6, atol=1e-9), key


@pytest.mark.parametrize("algo", ["loha", "lokr"])
def test_flattened_convs_are_written_as_4d_locon(written, tmp_path, algo):
    src = written[algo]
    convs = {k: m for k, m in _modules(src).items() if "resnets" in k and "conv" in k}
    assert convs and all(len(m.adapter.target_shape) == 2 for m in convs.values() if algo == "loha")
    out = tmp_path / f"{algo}.safetensors"
    merge_loras([f"{src}:0.8"], out, dtype="fp32")
    got = load_file(str(out))
    shapes = _conv_shapes("sd15", None)
    merged = {str(m.target): m for m in _modules(out).values()}
    from lorawb_core.tensors import open_tensors

    an = inspect_structure(src)
    with open_tensors(an.structure) as ld:
        for m in an.modules:
            if m.adapter.module not in convs:
                continue
            target = str(m.target)
            shape = shapes[target]
            key = merged[target].adapter.module
            up, down = got[f"{key}.lora_up.weight"], got[f"{key}.lora_down.weight"]
            assert down.shape[1:] == shape[1:] and up.shape == (shape[0], down.shape[0], 1, 1), key
            want = 0.8 * m.adapter.delta(lambda p, m=m: ld.get(m.adapter.params[p].key)).double()
            scale = float(got[f"{key}.alpha"]) / down.shape[0]
            mine = scale * up.double().flatten(1) @ down.double().flatten(1)
            assert float((mine - want.reshape(shape[0], -1)).norm() / want.norm()) < 1e-6, key


def test_conv_rank_applies_to_restored_convs(written, tmp_path):
    out = tmp_path / "loha_r.safetensors"
    rep = merge_loras([str(written["loha"])], out, rule=RankRule(rank=8, conv_rank=3), dtype="fp32")
    got = load_file(str(out))
    conv = [m for m in rep.modules if "resnets" in m.key and "conv" in m.key]
    assert conv and all(got[f"{m.key}.lora_down.weight"].shape[0] == 3 for m in conv)
