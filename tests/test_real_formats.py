"""inspect_file on LoRA files written by the real libraries (peft, diffusers, LyCORIS) and by our real-shape samples.

Every file: the right family, every module found and mapped to a block (no unknown keys), the algorithm named, and
norms that equal the dense reconstruction of ΔW.
"""

from __future__ import annotations

import math

import pytest

pytest.importorskip("peft")
pytest.importorskip("diffusers")
pytest.importorskip("lycoris")

import torch  # noqa: E402
from real_writers import ALL_WRITERS  # noqa: E402

from lorawb_core import inspect_file  # noqa: E402
from lorawb_core.inspection import inspect_structure  # noqa: E402
from lorawb_core.tensors import open_tensors  # noqa: E402

FAMILY = {"sd1": "sd15"}
ALGO = {"dora": {"dora", "lokr+dora"}, "locon": {"locon", "lora"}, "lokr": {"lokr"}, "loha": {"loha"},
        "lora": {"lora"}, "ia3": {"ia3"}, "glora": {"glora"}, "full": {"full"}, "oft": {"oft"}, "boft": {"boft"}}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = {}
    for name, fn in ALL_WRITERS:
        out[name] = fn(tmp_path_factory.mktemp(name.replace(".", "_")))
    return out


@pytest.mark.parametrize("name", [n for n, _ in ALL_WRITERS])
def test_real_file_identified(written, name):
    w = written[name]
    report = inspect_file(w.path)
    assert report.family.family == FAMILY.get(w.family, w.family), report.family
    assert report.unknown_keys == []
    assert len(report.modules) == w.expected_module_count
    algos = set(report.algorithms)
    if w.algorithm == "dora":
        assert algos & ALGO["dora"] and report.needs_base
    else:
        base = {a.replace("+dora", "") for a in algos}
        assert base <= ALGO[w.algorithm] | {"lora", "locon"} and w.algorithm in base | {"locon"}
        assert ("+dora" in "".join(algos)) == bool(w.options.get("dora_wd"))
    unmapped = set(report.unmapped)
    # every module lands in a block, except global embedders that no LBW block owns (time embedding, final proj)
    for key in unmapped:
        assert any(s in key for s in ("time_embed", "conv_in", "conv_out", "proj_out", "norm_out", "patch_embed",
                                      "condition_embedder", "time_text_embed")), key
    assert report.layout_id and report.blocks and report.total_norm > 0
    if w.variant and w.family == "wan":
        assert report.family.variant and w.variant.replace("i2v-", "") in report.family.variant
    if w.alpha is not None and w.algorithm in ("lora",) and "lora_adapter_metadata" in w.metadata:
        assert report.alpha == pytest.approx(w.alpha)


@pytest.mark.parametrize("name", [n for n, _ in ALL_WRITERS])
def test_real_file_norms_match_dense(written, name):
    """Shortcut norms (Grams, Kronecker, chunks) equal ‖dense ΔW‖ rebuilt by each adapter's ``delta``."""
    w = written[name]
    analysis = inspect_structure(w.path)
    report = inspect_file(w.path)
    norms = {m.key: m.norm for m in report.modules}
    checked = 0
    with open_tensors(analysis.structure) as loader:
        for m in analysis.modules[:40]:
            a = m.adapter
            if a.requires_base:
                continue

            def get(p, _a=a):
                return loader.get(_a.params[p].key)

            dense = a.delta(get)
            extra = sum(float(get(p).double().pow(2).sum()) for p in ("diff_b", "up_bias") if p in a.params)
            ref = math.sqrt(float(dense.double().pow(2).sum()) + extra * (a.scale() ** 2 if "up_bias" in a.params else 1))
            assert norms[a.module] == pytest.approx(ref, rel=1e-5, abs=1e-12), a.module
            checked += 1
    assert checked or report.needs_base


def test_lycoris_formulas_match_lycoris_itself(written):
    """Our LoHa/LoKr reconstruction equals LyCORIS's own functional ΔW."""
    from lycoris.functional import loha, lokr

    for name, fn_check in (("lycoris_loha", "loha"), ("lycoris_lokr", "lokr"), ("lycoris_lokr_decompose_both", "lokr")):
        analysis = inspect_structure(written[name].path)
        with open_tensors(analysis.structure) as loader:
            for m in analysis.modules[:10]:
                a = m.adapter

                def get(p, _a=a):
                    return loader.get(_a.params[p].key).float() if p in _a.params else None

                ours = a.delta(get).float()
                if fn_check == "loha":
                    theirs = loha.diff_weight(get("hada_w1_b"), get("hada_w1_a"), get("hada_w2_b"), get("hada_w2_a"),
                                              None, None, gamma=a.scale(), backend="torch")
                else:
                    theirs = lokr.diff_weight(get("lokr_w1"), get("lokr_w1_a"), get("lokr_w1_b"), get("lokr_w2"),
                                              get("lokr_w2_a"), get("lokr_w2_b"), get("lokr_t2"), gamma=a.alpha,
                                              backend="torch")
                assert torch.allclose(ours, theirs.reshape(ours.shape).float(), rtol=1e-4, atol=1e-7), a.module


@pytest.mark.parametrize("spec_index", range(25))
def test_sample_library(tmp_path_factory, spec_index):
    from lorawb_core.samples import build_sample_library

    root = tmp_path_factory.getbasetemp() / "samplelib"
    if not root.exists():
        build_sample_library(root)
    files = sorted(root.rglob("*.safetensors"))
    if spec_index >= len(files):
        pytest.skip("fewer sample files")
    report = inspect_file(files[spec_index])
    assert report.family.family != "unknown" and report.family.confidence in ("high", "medium")
    assert report.unknown_keys == [] and report.layout_id
    assert all(m.block for m in report.modules), report.unmapped
