"""The host-free parts of applying: block plans over ComfyUI weight keys, resolved weights, chooser labels, the cache."""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch
from conftest import save

from lorawb_core.apply import patch_target, plan_patches, resolve_weights
from lorawb_core.cache import LoraCache, budget_from_env, preload_ids_from_env, state_dict_bytes
from lorawb_core.errors import NotInLibrary, ProfileMismatch, UnreadableFile
from lorawb_core.profiles import builtin_profiles, get_profile
from lorawb_core.refs import choice_label, parse_choice

SD15_KEYS = [
    "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight",
    "diffusion_model.input_blocks.4.1.proj_in.weight",
    "diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight",
    "diffusion_model.output_blocks.11.1.proj_out.weight",
    "diffusion_model.time_embed.0.weight",
    "clip_l.transformer.text_model.encoder.layers.3.mlp.fc1.weight",
]
FLUX_KEYS = [("diffusion_model.double_blocks.3.img_attn.qkv.weight", (0, 0, 64)),
             ("diffusion_model.double_blocks.3.img_attn.qkv.weight", (0, 64, 64)),
             "diffusion_model.single_blocks.37.linear1.weight", "diffusion_model.img_in.weight",
             "t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.q.weight"]


def test_plan_groups_keys_by_named_block_with_their_weights():
    weights = {"BASE": 0.25, "IN01": 0.0, "IN04": 0.5, "M00": 1.0, "OUT11": 2.0}
    plan = plan_patches(SD15_KEYS, "sd15_unet_17", weights)
    assert [(g.block, g.weight, len(g.keys)) for g in plan.groups] == [
        ("BASE", 0.25, 1), ("IN04", 0.5, 1), ("M00", 1.0, 1), ("OUT11", 2.0, 1), (None, 1.0, 1)]
    assert plan.muted == ["IN01"]  # weight 0: nothing is added for it
    assert plan.unmapped == ["diffusion_model.time_embed.0.weight"]
    assert plan.key_count == 5


def test_fused_slices_share_their_block_and_flux_names_map():
    plan = plan_patches(FLUX_KEYS, "flux_dit_61", {"D03": 0.5, "S37": 0.0, "IN": 1.0, "T5": 0.3})
    groups = {g.block: g for g in plan.groups}
    assert len(groups["D03"].keys) == 2 and groups["D03"].weight == 0.5
    assert groups["T5"].weight == 0.3 and groups["IN"].weight == 1.0 and plan.muted == ["S37"]
    assert patch_target(FLUX_KEYS[0]) == "diffusion_model.double_blocks.3.img_attn.qkv.weight"


def test_without_a_layout_everything_goes_at_full_strength():
    plan = plan_patches(SD15_KEYS, None, {})
    assert len(plan.groups) == 1 and plan.groups[0].weight == 1.0 and plan.key_count == len(SD15_KEYS)


def test_keys_outside_every_block_take_rests_weight():
    keys = ["diffusion_model.time_embed.0.weight", "diffusion_model.out.2.weight",
            "diffusion_model.input_blocks.4.1.proj_in.weight"]
    plan = plan_patches(keys, "sd15_unet_26", {"IN04": 0.5, "REST": 0.25})
    assert {g.block: g.weight for g in plan.groups} == {"IN04": 0.5, None: 0.25}
    assert plan.unmapped == ["diffusion_model.out.2.weight", "diffusion_model.time_embed.0.weight"]
    muted = plan_patches(keys, "sd15_unet_26", {"IN04": 1.0, "REST": 0.0})
    assert [g.block for g in muted.groups] == ["IN04"] and muted.muted == ["REST"]
    assert {g.block: g.weight for g in plan_patches(keys, "sd15_unet_26", {"IN04": 1.0}).groups}[None] == 1.0


def test_resolve_weights_converts_views_and_refuses_other_families():
    ins = next(p for p in builtin_profiles("sd15_unet_17") if p.name == "INS")
    r = resolve_weights(ins, "sd15_unet_17", touched={"IN00", "IN01"})
    assert r.layout_id == "sd15_unet_26" and r.weights["IN04"] == 1.0 and r.weights["IN05"] == 0.0
    assert r.weights["IN00"] == 0.0 and "IN00" in r.notes[0] and "LBW rule" in r.notes[0]
    uniform = resolve_weights(None, "flux_dit_61")
    assert uniform.source == "uniform" and set(uniform.weights.values()) == {1.0} and len(uniform.weights) == 61 + 1  # + REST
    xl = next(p for p in builtin_profiles("sdxl_unet_12") if p.name == "ALL")
    with pytest.raises(ProfileMismatch) as err:
        resolve_weights(xl, "sd15_unet_17")
    assert "sdxl_unet_12" in str(err.value) and "sd15_unet_26" in str(err.value)
    assert r.text("sd15_unet_17").startswith("BASE=1, IN01=1, IN02=1, IN04=1, IN05=0")


def test_resolved_text_parses_back_to_the_same_weights(tmp_path):
    from lorawb_core.profiles import parse_weights

    outd = next(p for p in builtin_profiles("sd15_unet_17") if p.name == "OUTD")
    r = resolve_weights(outd, "sd15_unet_17")
    back = parse_weights(r.text(), family="sd15")
    assert back.profile.weights == r.weights


def test_choice_labels_carry_the_stable_id():
    assert choice_label("FLX-CLT-057", "neon coat") == "FLX-CLT-057 · neon coat"
    assert parse_choice("flx-clt-057 · a stale old name") == "FLX-CLT-057"
    assert parse_choice("SDX-GEN-1000") == "SDX-GEN-1000"
    with pytest.raises(NotInLibrary, match="stable ID"):
        parse_choice("my_lora.safetensors")


def test_profile_labels_round_trip_through_get_profile(tmp_path):
    from lorawb_core.library import open_library

    db = open_library(tmp_path / "db.sqlite3")
    p = next(p for p in builtin_profiles("flux_dit_61") if p.name == "DOUBLE")
    name, _, layout = p.label.partition(" · ")
    assert get_profile(db, name, layout).weights == p.weights


# ---- cache -------------------------------------------------------------------------------------------------------
def _file(tmp_path, name: str, numel: int) -> str:
    return str(save(tmp_path / name, {"w": torch.zeros(numel, dtype=torch.float32)}))


def test_cache_hits_misses_evictions_and_byte_budget(tmp_path):
    a, b, c = (_file(tmp_path, f"{n}.safetensors", 1000) for n in "abc")
    loads = []

    def loader(path):
        loads.append(os.path.basename(path))
        from safetensors.torch import load_file

        return load_file(path)

    cache = LoraCache(budget_bytes=9000, loader=loader)  # room for two 4000-byte files
    assert cache.get(a) is cache.get(a)
    cache.get(b)
    cache.get(c)  # evicts a (least recently used)
    s = cache.stats()
    assert (s.hits, s.misses, s.evictions, s.entries, s.bytes) == (1, 3, 1, 2, 8000)
    assert a not in cache and b in cache and c in cache and loads == ["a.safetensors", "b.safetensors",
                                                                      "c.safetensors"]
    cache.get(b)  # b becomes most recent, so d evicts c
    cache.get(_file(tmp_path, "d.safetensors", 1000))
    assert b in cache and c not in cache
    assert cache.stats().to_dict()["hit_rate"] == pytest.approx(2 / 6)
    assert cache.clear() == 2 and cache.stats().bytes == 0


def test_cache_reloads_a_changed_file_and_never_keeps_oversized_entries(tmp_path):
    path = _file(tmp_path, "x.safetensors", 100)
    cache = LoraCache(budget_bytes=1 << 20)
    first = cache.get(path)
    save(tmp_path / "x.safetensors", {"w": torch.ones(200, dtype=torch.float32)})
    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    second = cache.get(path)
    assert first["w"].numel() == 100 and second["w"].numel() == 200 and cache.stats().entries == 1
    big = _file(tmp_path, "big.safetensors", 1 << 19)  # 2 MB > budget
    assert cache.get(big)["w"].numel() == 1 << 19 and big not in cache
    with pytest.raises(UnreadableFile, match="rescan"):
        cache.get(tmp_path / "gone.safetensors")


def test_cache_loads_once_under_concurrency(tmp_path):
    path = _file(tmp_path, "c.safetensors", 10)
    calls = []

    def slow(p):
        calls.append(p)
        time.sleep(0.2)
        return {"w": torch.zeros(10)}

    cache = LoraCache(budget_bytes=1 << 20, loader=slow)
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get(path))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and all(r is results[0] for r in results)
    assert cache.stats().hits == 5 and cache.stats().misses == 1


def test_cache_preload_reports_bad_files_and_env_settings(tmp_path, monkeypatch):
    good = _file(tmp_path, "g.safetensors", 10)
    cache = LoraCache(budget_bytes=1 << 20)
    problems = cache.preload([good, tmp_path / "nope.safetensors"])
    assert good in cache and len(problems) == 1 and "nope.safetensors" in problems[0]
    monkeypatch.setenv("LORAWB_CACHE_MB", "1.5")
    assert budget_from_env() == int(1.5 * 1024 * 1024)
    monkeypatch.setenv("LORAWB_PRELOAD", "sd1-chr-001, FLX-STY-002  SDX-GEN-010")
    assert preload_ids_from_env() == ["SD1-CHR-001", "FLX-STY-002", "SDX-GEN-010"]
    t = torch.zeros(4)
    assert state_dict_bytes({"a": t, "b": t[:2], "c": torch.zeros(2)}) == 24  # a view shares its storage: counted once
