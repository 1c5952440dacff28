"""Baking a single DoRA file (written by peft, ``use_dora=True``) into a plain LoRA with the base model given: the
merged ΔW is the best rank-R approximation of PEFT's effective delta ``m·(W+ΔW)/‖W+ΔW‖_row − W``; without a base,
with a stack, or without a rank the merge refuses with the reason and writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from safetensors.torch import load_file, save_file  # noqa: E402

from lorawb_core.errors import IncompatibleStack, UsageError  # noqa: E402
from lorawb_core.inspection import inspect_structure  # noqa: E402
from lorawb_core.merge import RankRule, merge_loras  # noqa: E402
from lorawb_core.tensors import open_tensors  # noqa: E402

try:
    from tests import real_writers as rw
except ImportError:  # pragma: no cover - run from tests/
    import real_writers as rw

RANK = 6
# the attention of the first and last UNet levels (320 wide): every DoRA shape kind, small enough for CI
TARGETS = r".*(down_blocks\.0|up_blocks\.3)\..*(to_q|to_k|to_v|to_out\.0)$"


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the dense reference math (conftest.py)


@pytest.fixture(scope="module")
def dora(tmp_path_factory) -> dict[str, Path]:
    """An SD1.5 UNet DoRA by peft + a base file holding a random weight for every module it patches (checkpoint
    naming, ``model.diffusion_model.…``)."""
    base_dir = tmp_path_factory.mktemp("dora")
    written = rw._write_peft_sd(base_dir, family="sd1", rank=4, alpha=8.0, train_unet=True, train_text_encoder=False,
                                key_style="diffusers", adapter_metadata=True, te_layout="installed",
                                dtype=torch.float32, seed=21, weight_name="dora_sd15.safetensors", use_dora=True,
                                unet_targets=TARGETS)
    an = inspect_structure(written.path)
    assert an.modules and all(m.adapter.decomposed for m in an.modules)
    gen = torch.Generator().manual_seed(5)
    weights = {f"model.{m.target}.weight": (torch.randn(m.adapter.target_shape, generator=gen) * 0.05).half()
               for m in an.modules}
    save_file(weights, str(base_dir / "base.safetensors"))
    plain = rw.write_peft_sd15(base_dir / "plain", train_text_encoder=False, weight_name="plain.safetensors").path
    return {"dora": written.path, "base": base_dir / "base.safetensors", "plain": plain}


def _effective(path: Path, base: dict, strength: float) -> dict[str, torch.Tensor]:
    """PEFT's DoRA forward weight minus the base, per target, float64 (peft ``DoraLinearLayer``: the norm of
    W + scaling·B·A over dim 1, magnitude / norm per output row)."""
    an = inspect_structure(path)
    out = {}
    with open_tensors(an.structure) as ld:
        for m in an.modules:
            p = m.adapter.params
            up, down = ld.get(p["up"].key).double(), ld.get(p["down"].key).double()
            mag = ld.get(p["magnitude"].key).double()
            w = base[f"model.{m.target}.weight"].double()
            patched = w + m.adapter.scale() * (up @ down)
            out[str(m.target)] = strength * (patched * (mag / patched.norm(dim=1))[:, None] - w)
    return out


def test_bake_lands_on_the_rank_r_optimum_of_the_effective_delta(dora, tmp_path):
    out = tmp_path / "baked.safetensors"
    rep = merge_loras([f"{dora['dora']}:0.8"], out, rule=RankRule(rank=RANK), dtype="fp32", base=dora["base"])
    want = _effective(dora["dora"], load_file(str(dora["base"])), 0.8)
    got_file = load_file(str(out))
    assert not [k for k in got_file if "magnitude" in k or "dora_scale" in k]
    merged = {str(m.target): m for m in inspect_structure(out).modules}
    assert set(merged) == set(want)
    worst = 0.0
    assert len(want) == 40
    for target, eff in want.items():
        a = merged[target].adapter
        assert a.rank == RANK and not a.decomposed
        mine = a.scale() * (got_file[a.params["up"].key].double() @ got_file[a.params["down"].key].double())
        u, s, vt = torch.linalg.svd(eff, full_matrices=False)
        best = (u[:, :RANK] * s[:RANK]) @ vt[:RANK]
        worst = max(worst, float((mine - best).norm() / best.norm()))
        # the rank-R truncation of a renormalised update keeps most of it, and the report says how much
        err = float(s[RANK:].pow(2).sum().sqrt() / s.pow(2).sum().sqrt())
        mod = next(x for x in rep.modules if x.target == target)
        assert mod.error == pytest.approx(err, rel=1e-6, abs=1e-9)
    assert worst < 1e-5


def test_dora_bake_refusals_write_nothing(dora, tmp_path):
    out = tmp_path / "never.safetensors"
    with pytest.raises(IncompatibleStack, match="give the model it was trained on with --base"):
        merge_loras([str(dora["dora"])], out, rule=RankRule(rank=RANK))
    with pytest.raises(IncompatibleStack, match="cannot be summed with other LoRAs"):
        merge_loras([str(dora["dora"]), str(dora["plain"])], out, rule=RankRule(rank=RANK), base=dora["base"])
    with pytest.raises(IncompatibleStack, match="only used to bake a single DoRA"):
        merge_loras([str(dora["plain"])], out, rule=RankRule(rank=RANK), base=dora["base"])
    with pytest.raises(UsageError, match="needs a target rank"):
        merge_loras([str(dora["dora"])], out, base=dora["base"])
    partial = tmp_path / "partial_base.safetensors"
    save_file(dict(list(load_file(str(dora["base"])).items())[:3]), str(partial))
    with pytest.raises(UsageError, match="has no weight for module diffusion_model"):
        merge_loras([str(dora["dora"])], out, rule=RankRule(rank=RANK), base=partial)
    assert not out.exists() and not list(tmp_path.glob(".*partial"))


def test_cli_bake(dora, tmp_path, capsys):
    from lorawb_core.cli import main

    out = tmp_path / "cli_baked.safetensors"
    assert main(["merge", str(dora["dora"]), "--base", str(dora["base"]), "--rank", "4", "--out", str(out),
                 "--no-library", "--json"]) == 0
    assert out.exists() and '"rank 4"' in capsys.readouterr().out
