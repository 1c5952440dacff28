"""Module facts computed once per (tensor keys, shapes): the shortcut for rank-free modules (``Adapter.rank_free``:
facts probed at one rank, reused at another) gives exactly what probing the module gives, for arbitrary params and
shapes of LoRA, DoRA and LoHa modules."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from lorawb_core.header_index import TensorInfo
from lorawb_core.inspection import module_facts as mf
from lorawb_core.key_groups import grouping_plan

MODULE = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"
SUFFIXES = {"up": ".lora_up.weight", "down": ".lora_down.weight", "alpha": ".alpha", "mid": ".lora_mid.weight",
            "dora_scale": ".dora_scale", "up_bias": ".lora_B.bias", "hada_w1_a": ".hada_w1_a",
            "hada_w1_b": ".hada_w1_b", "hada_w2_a": ".hada_w2_a", "hada_w2_b": ".hada_w2_b", "hada_t1": ".hada_t1"}
LORA, LOHA = {"up", "down"}, {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"}
_dim = st.sampled_from([0, 1, 2, 3, 4, 8, 320, 768])
_shape = st.one_of(st.tuples(_dim, _dim), st.tuples(_dim, _dim, _dim, _dim), st.tuples(_dim), st.just(()))
_names = st.one_of(st.sampled_from([LORA, LORA | {"alpha"}, LORA | {"alpha", "dora_scale"}, LORA | {"dora_scale"},
                                    LOHA, LOHA | {"alpha"}, LOHA | {"alpha", "hada_t1"}]),
                   st.sets(st.sampled_from(sorted(SUFFIXES)), min_size=1, max_size=5))


def _tensors(shapes: dict[str, tuple[int, ...]]) -> dict[str, TensorInfo]:
    return {MODULE + SUFFIXES[p]: TensorInfo(MODULE + SUFFIXES[p], "F16", s) for p, s in shapes.items()}


def _fields(facts) -> dict:
    return {f.name: getattr(facts, f.name) for f in dataclasses.fields(facts) if f.name != "targets"}


def _facts(tensors):
    plan = grouping_plan(tuple(tensors))
    assert len(plan.modules) == 1
    return mf.module_facts(plan.modules[0], tensors), plan.modules[0]


def _fitting(names: set[str], out: int, inn: int, data) -> dict[str, tuple[int, ...]]:
    """Shapes that multiply (a rank drawn per pair; sometimes a pair that disagrees or a magnitude of size 0)."""
    r, r2 = data.draw(_dim), data.draw(_dim)
    mismatch = data.draw(st.sampled_from([False, False, False, True]))
    shapes = {}
    if LORA <= names:
        shapes.update(up=(out, r), down=(r2 if mismatch else r, inn))
    if LOHA <= names:
        kernel = data.draw(st.sampled_from([(), (3, 3)]))
        shapes.update(hada_w1_a=(out, r), hada_w1_b=(r2 if mismatch else r, inn, *kernel), hada_w2_a=(out, r2),
                      hada_w2_b=(r2, inn, *kernel))
    if "dora_scale" in names:
        shapes["dora_scale"] = data.draw(st.sampled_from([(out, 1), (1, inn), (0, 1)]))
    return shapes


@settings(max_examples=600, deadline=None)
@given(_names, _dim, _dim, st.data())
def test_facts_equal_a_fresh_probe_whatever_was_seen_before(names, out, inn, data):
    mf.clear()
    for _ in range(4):  # the same keys at other ranks (a later one may take the shortcut), or broken
        shapes = {p: data.draw(_shape) for p in sorted(names)}
        if data.draw(st.booleans()):
            shapes.update(_fitting(names, out, inn, data))
        tensors = _tensors(shapes)
        facts, plan = _facts(tensors)
        fresh = mf._probe(plan.key, {p: tensors[k] for p, k in plan.params})
        assert _fields(facts) == _fields(fresh), shapes
        if fresh.shape is not None:  # (one by-family targets map per module key and target size)
            assert facts.targets is mf._targets_of(plan.key, fresh.shape.out_features, fresh.shape.in_features)


def test_rank_free_modules_share_their_facts_across_ranks():
    mf.clear()
    probes = []
    real = mf._probe
    mf._probe = lambda *a: probes.append(a) or real(*a)
    try:
        first, _ = _facts(_tensors({"up": (320, 4), "down": (4, 768), "alpha": ()}))
        other, _ = _facts(_tensors({"up": (320, 16), "down": (16, 768), "alpha": ()}))
        mismatch, _ = _facts(_tensors({"up": (320, 6), "down": (4, 768), "alpha": ()}))
        loha = [_facts(_tensors({"hada_w1_a": (320, r), "hada_w1_b": (r, 768), "hada_w2_a": (320, r),
                                 "hada_w2_b": (r, 768)}))[0] for r in (4, 8)]
        dora = [_facts(_tensors({"up": (320, r), "down": (r, 768), "dora_scale": (320, 1)}))[0] for r in (4, 8)]
    finally:
        mf._probe = real
    assert other.rank == 16 and first.rank == 4 and other.target_shape == first.target_shape == (320, 768)
    assert other.raw is first.raw and other.format == first.format and not other.problems
    assert mismatch.problems  # factors that do not multiply are probed, and refused
    assert [f.rank for f in loha] == [4, 8] and loha[1].algorithm == "loha" and not loha[1].problems
    assert [f.rank for f in dora] == [4, 8] and dora[1].algorithm == "dora" and dora[1].requires_base
    assert len(probes) == 4  # the first rank of each kind, and the mismatch
