"""Module facts computed once per (tensor keys, shapes): the shortcut for plain LoRA modules (facts probed at one
rank, reused with another rank) gives exactly what probing the module gives, for arbitrary params and shapes."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from lorawb_core.header_index import TensorInfo
from lorawb_core.inspection import module_facts as mf
from lorawb_core.key_groups import grouping_plan

MODULE = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"
SUFFIXES = {"up": ".lora_up.weight", "down": ".lora_down.weight", "alpha": ".alpha", "mid": ".lora_mid.weight",
            "dora_scale": ".dora_scale", "up_bias": ".lora_B.bias"}
_dim = st.sampled_from([0, 1, 2, 3, 4, 8, 320, 768])
_shape = st.one_of(st.tuples(_dim, _dim), st.tuples(_dim, _dim, _dim, _dim), st.tuples(_dim), st.just(()))
_params = st.sets(st.sampled_from(sorted(SUFFIXES)), min_size=1, max_size=4)


def _tensors(shapes: dict[str, tuple[int, ...]]) -> dict[str, TensorInfo]:
    return {MODULE + SUFFIXES[p]: TensorInfo(MODULE + SUFFIXES[p], "F16", s) for p, s in shapes.items()}


def _fields(facts) -> dict:
    return {f.name: getattr(facts, f.name) for f in dataclasses.fields(facts) if f.name != "targets"}


def _facts(tensors):
    plan = grouping_plan(tuple(tensors))
    assert len(plan.modules) == 1
    return mf.module_facts(plan.modules[0], tensors), plan.modules[0]


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.sampled_from([{"up", "down"}, {"up", "down", "alpha"}]), _params), _dim, _dim, st.data())
def test_facts_equal_a_fresh_probe_whatever_was_seen_before(names, out, inn, data):
    mf.clear()
    for _ in range(4):  # the same keys at other ranks (a later one may take the plain-LoRA shortcut) or broken
        shapes = {p: data.draw(_shape) for p in sorted(names)}
        if {"up", "down"} <= names:
            kind = data.draw(st.sampled_from(["fits", "fits", "mismatch", "any"]))
            r, r2 = data.draw(_dim), data.draw(_dim)
            if kind == "fits":
                shapes.update(up=(out, r), down=(r, inn))
            elif kind == "mismatch":
                shapes.update(up=(out, r), down=(r2, inn))
        tensors = _tensors(shapes)
        facts, plan = _facts(tensors)
        fresh = mf._probe(plan.key, {p: tensors[k] for p, k in plan.params})
        assert _fields(facts) == _fields(fresh), shapes
        if fresh.shape is not None:  # (one by-family targets map per module key and target size)
            assert facts.targets is mf._targets_of(plan.key, fresh.shape.out_features, fresh.shape.in_features)


def test_plain_lora_modules_share_their_rank_free_facts():
    mf.clear()
    first, _ = _facts(_tensors({"up": (320, 4), "down": (4, 768), "alpha": ()}))
    probes = []
    real = mf._probe
    mf._probe = lambda *a: probes.append(a) or real(*a)
    try:
        other, _ = _facts(_tensors({"up": (320, 16), "down": (16, 768), "alpha": ()}))
        mismatch, _ = _facts(_tensors({"up": (320, 6), "down": (4, 768), "alpha": ()}))
    finally:
        mf._probe = real
    assert other.rank == 16 and first.rank == 4 and other.target_shape == first.target_shape == (320, 768)
    assert other.raw is first.raw and other.format == first.format and not other.problems
    assert len(probes) == 1 and mismatch.problems  # factors that do not multiply are probed, and refused
