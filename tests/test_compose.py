"""The compose gate on a real library (no host needed) and the low-rank inner products behind its cosines."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from library_helpers import HOUR_AGO_NS, quick_scan
from safetensors.numpy import load_file, save_file

from lorawb_core.compose import StackEntry, check_stack
from lorawb_core.inspection import inspect_structure
from lorawb_core.library import open_library
from lorawb_core.profiles import builtin_profiles
from lorawb_core.samples import write_lora
from lorawb_core.similarity import module_inner
from lorawb_core.tensors import open_tensors

MODS = ("*down_blocks_1_*attn2_to_k", "*up_blocks_1_*attn1_to_q", "*mid_block_*attn2_to_v")


def _write(path, family="sd15", seed=0, **kw):
    p = write_lora(path, family, te=False, rank=4, seed=seed, modules=kw.pop("modules", MODS), dtype="float32", **kw)
    os.utime(p, ns=(HOUR_AGO_NS, HOUR_AGO_NS))
    return p


def _negated(src, dst):
    tensors = load_file(str(src))
    save_file({k: (-v if k.endswith("lora_up.weight") else v) for k, v in tensors.items()}, str(dst))
    os.utime(dst, ns=(HOUR_AGO_NS, HOUR_AGO_NS))
    return dst


@pytest.fixture
def lib(tmp_path):
    root = tmp_path / "loras"
    files = {
        "a": _write(root / "characters" / "a.safetensors", seed=1),
        "b": _write(root / "characters" / "b.safetensors", seed=2),
        "xl": _write(root / "styles" / "xl.safetensors", "sdxl", seed=3, modules=("*input_blocks_4_1_*attn2_to_k",)),
        "dora": _write(root / "styles" / "dora.safetensors", seed=4, dora=True),
        "loha": _write(root / "styles" / "loha.safetensors", seed=5, algorithm="loha"),
    }
    files["neg"] = _negated(files["a"], root / "characters" / "a_negated.safetensors")
    db = open_library(tmp_path / "db.sqlite3")
    quick_scan(db, [root])
    ids = {r["file_name"].split(".")[0]: r["stable_id"] for r in db["loras"].rows}
    return db, ids, files, root


def test_gate_refuses_mixed_families_listing_every_offender(lib):
    db, ids, _, _ = lib
    v = check_stack(db, [StackEntry(ids["a"]), StackEntry(ids["xl"]), StackEntry("SD1-ZZZ-404")])
    assert not v.ok and len(v.reasons) == 2
    assert v.reasons[0].startswith(f"#2 {ids['xl']}") and "sdxl LoRA but the rest of the stack is sd15" in v.reasons[0]
    assert v.reasons[1].startswith("#3 SD1-ZZZ-404") and "No LoRA with stable ID" in v.reasons[1]
    assert v.blocks == []
    v = check_stack(db, [StackEntry(ids["a"])], model_family="sdxl")
    assert not v.ok and "but the model is sdxl" in v.reasons[0]


def test_gate_refuses_missing_files_and_unmappable_profiles(lib):
    db, ids, files, root = lib
    xl_profile = next(p for p in builtin_profiles("sdxl_unet_12") if p.name == "ALL")
    v = check_stack(db, [StackEntry(ids["a"], profile=xl_profile), StackEntry(ids["b"])])
    assert not v.ok and "cannot map onto layout sd15_unet_26" in v.reasons[0] and "sdxl_unet_12" in v.reasons[0]
    files["b"].rename(root / "b_moved_out.safetensors.bak")
    quick_scan(db, [root])
    v = check_stack(db, [StackEntry(ids["a"]), StackEntry(ids["b"])])
    assert not v.ok and "is missing" in v.reasons[0] and "b.safetensors" in v.reasons[0]


def test_good_stack_combined_graph_is_exact(lib):
    db, ids, files, _ = lib
    outd = next(p for p in builtin_profiles("sd15_unet_17") if p.name == "OUTD")
    v = check_stack(db, [StackEntry(ids["a"], 0.8), StackEntry(ids["b"], 0.5, profile=outd)], threshold=1.2)
    assert v.ok and v.family == "sd15" and v.layout_id == "sd15_unet_26"
    blocks = {b.id: b for b in v.blocks}
    # dense reference: ‖0.8·w_a·ΔW_a + 0.5·w_b·ΔW_b‖ per block from the reconstructed deltas
    deltas = {}
    for name, coef in (("a", 0.8), ("b", 0.5)):
        an = inspect_structure(files[name])
        with open_tensors(an.structure) as loader:
            for m in an.modules:
                w = 1.0 if name == "a" else outd.weights.get(m.block, 0.0) if m.block in outd.weights else 0.0
                d = m.adapter.delta(lambda p, m=m: loader.get(m.adapter.params[p].key)).double().numpy()
                deltas.setdefault(m.block, {}).setdefault(str(m.target), 0)
                deltas[m.block][str(m.target)] = deltas[m.block][str(m.target)] + coef * w * d
    for block, per_target in deltas.items():
        dense = math.sqrt(sum(float((d ** 2).sum()) for d in per_target.values()))
        assert blocks[block].norm == pytest.approx(dense, rel=1e-6), block
        assert blocks[block].exact
    assert blocks["IN05"].coefficients == [0.8, 0.0]  # OUTD gives IN05 0
    assert blocks["OUT03"].strength_sum == pytest.approx(1.3)
    assert any("block OUT03: combined strength 1.30 exceeds 1.2" in w for w in v.warnings)


def test_opposite_deltas_are_flagged_and_cancel(lib):
    db, ids, _, _ = lib
    v = check_stack(db, [StackEntry(ids["a"]), StackEntry(ids["a_negated"])])
    assert v.ok
    assert any("opposite directions (cosine -1.00)" in w for w in v.warnings)
    # the norms come from float32 Grams (relative error ~1e-7), so the cancellation leaves ~sqrt(1e-7) of them
    assert all(b.norm <= 1e-3 * max(b.contributions) for b in v.blocks if max(b.contributions) > 0)
    cos = [c["cosine"] for c in v.cosines]
    assert cos and all(c == pytest.approx(-1.0) for c in cos)
    # a negative strength turns them the same way again
    v = check_stack(db, [StackEntry(ids["a"]), StackEntry(ids["a_negated"], -1.0)])
    assert not any("opposite" in w for w in v.warnings) and all(c["cosine"] == pytest.approx(1.0) for c in v.cosines)


def test_warnings_same_lora_twice_and_dora_mix(lib):
    db, ids, _, _ = lib
    v = check_stack(db, [StackEntry(ids["a"]), StackEntry(ids["a"]), StackEntry(ids["dora"])], has_clip=False)
    assert v.ok
    assert any(f"{ids['a']} is in the stack 2 times" in w for w in v.warnings)
    assert any(w.startswith("DoRA (#3") for w in v.warnings)
    d = v.to_dict()
    assert d["entries"][0]["title"].startswith("#1 ") and d["ok"] is True and len(d["blocks"]) == 26


def test_entries_from_json_with_typed_weights_and_profile_labels(lib):
    db, ids, _, _ = lib
    v = check_stack(db, [{"lora": ids["a"], "strength_model": 0.5, "weights": "IN04=0.25, default=0"},
                         {"lora": ids["b"], "profile": "INS · sd15_unet_17"}])
    assert v.ok
    a, b = v.entries
    assert a.weights["IN04"] == 0.25 and a.weights["OUT03"] == 0.0 and a.strength_model == 0.5
    assert b.weights_source == "INS · sd15_unet_17" and b.weights["IN01"] == 1.0
    with pytest.raises(Exception, match="'strength_model' must be a number"):
        check_stack(db, [{"lora": ids["a"], "strength_model": "lots"}])


def test_low_rank_inner_product_equals_dense(lib):
    _, _, files, _ = lib
    an_a, an_b, an_h = (inspect_structure(files[k]) for k in ("a", "b", "loha"))
    with open_tensors(an_a.structure) as la, open_tensors(an_b.structure) as lb, open_tensors(an_h.structure) as lh:
        for ma, mb, mh in zip(an_a.modules, an_b.modules, an_h.modules, strict=True):
            ga = lambda p, m=ma: la.get(m.adapter.params[p].key)  # noqa: E731
            gb = lambda p, m=mb: lb.get(m.adapter.params[p].key)  # noqa: E731
            gh = lambda p, m=mh: lh.get(m.adapter.params[p].key)  # noqa: E731
            dense = float((ma.adapter.delta(ga).double() * mb.adapter.delta(gb).double()).sum())
            assert module_inner(ma.adapter, ga, mb.adapter, gb) == pytest.approx(dense, rel=1e-9)
            dense_h = float(np.sum(ma.adapter.delta(ga).double().numpy() * mh.adapter.delta(gh).double().numpy()))
            assert module_inner(ma.adapter, ga, mh.adapter, gh) == pytest.approx(dense_h, rel=1e-9)  # dense path


def test_compose_cli_exit_codes_and_json(lib, tmp_path, capsys):
    import json

    from lorawb_core.cli import main

    db, ids, _, _ = lib
    path = db.conn.execute("PRAGMA database_list").fetchone()[2]
    assert main(["compose", f"{ids['a']}:0.5", f"{ids['b']}@OUTD", "--db", path, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["entries"][0]["strength_model"] == 0.5 and out["entries"][1]["weights_source"] == \
        "OUTD · sd15_unet_17"
    assert main(["compose", ids["a"], ids["xl"], "--db", path]) == 1
    assert "REFUSED" in capsys.readouterr().out
    assert main(["compose", f"{ids['a']}:lots", "--db", path]) == 2
