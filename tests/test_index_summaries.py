"""The structure phase's summaries by index digest give exactly what the cold path gives (correctness only).

``summarize_structure`` skips the tensor-index parse and validation for a header whose bytes around the metadata
digest to an index validated and summarised before. Every field of such a summary must equal the one computed with
every cache empty, and the library columns must equal those of the straightforward full analysis
(``test_perf_paths._reference_report``), over the bench's realistic mix and over files of the real writers.
"""

from __future__ import annotations

import dataclasses
import random
import sys
from pathlib import Path

import pytest
import torch
from conftest import save
from test_perf_paths import _reference_report

from lorawb_core import header_index, key_groups
from lorawb_core.errors import CorruptFile
from lorawb_core.file_tasks import structure_fields
from lorawb_core.inspection import module_facts, structure, summaries, summarize_structure

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from bench_index import WORDS, _index, _tensors, write_sparse_lora  # noqa: E402
from layout_mix import kohya_metadata, varied_layouts  # noqa: E402


def _clear_caches() -> None:
    with header_index._cache_lock:
        header_index._INDEX_CACHE.clear()
        header_index._CANDIDATES.clear()
        header_index._VALIDATED.clear()
    structure.clear()
    summaries.clear()
    module_facts.clear()
    key_groups._PLANS.clear()


def _cold(p: Path):
    """The summary with every cache empty (what the first file of an index gets)."""
    _clear_caches()
    return summarize_structure(p)


@pytest.fixture
def fast_reads(monkeypatch):
    """Counts the reads that skipped the tensor index (the fast path under test), with the per-index caches of
    tensors and modules as small as they are against a library of thousands of indexes."""
    monkeypatch.setattr(header_index, "_INDEX_CACHE_SIZE", 2)
    monkeypatch.setattr(structure._ANALYSES, "entries", 2)
    seen = {"skipped": 0, "read": 0}
    real = summaries.read_structure

    def counting(path, **kw):
        s = real(path, **kw)
        seen["skipped" if not s.tensors_read else "read"] += 1
        return s

    monkeypatch.setattr(summaries, "read_structure", counting)
    return seen


def _check(files: list[Path], order: list[Path]) -> None:
    cold = {p: _cold(p) for p in files}
    _clear_caches()
    for p in order:  # caches filling up as in a scan: the first file of an index is cold, the others not
        fast, ref = dataclasses.asdict(summarize_structure(p)), dataclasses.asdict(cold[p])
        assert repr(fast) == repr(ref), p  # every field as text, the metadata in its header order included
    for p in files:  # the library columns equal those of the straightforward full analysis (alpha: phase b)
        full = structure_fields(_reference_report(p)[0])
        fields = structure_fields(summarize_structure(p))
        assert {k: v for k, v in fields.items() if k != "alpha"} == {k: v for k, v in full.items() if k != "alpha"}


def test_summaries_equal_the_cold_path_on_the_realistic_mix(tmp_path, fast_reads):
    rng = random.Random(5)
    files = []
    for j, (_family, base, dtype, rank, tensors) in enumerate(varied_layouts(60, seed=3)):
        index, data = _index(tensors, dtype)
        for copy in range(3):  # files of one index: their own metadata (names, sizes, base-model evidence)
            meta = kohya_metadata(rng, f"f{j}_{copy}", base if copy < 2 else rng.choice(["sd_v1", "flux1", "sd3"]),
                                  rank, WORDS, j)
            if copy == 1:
                meta.pop("ss_base_model_version")
            p = tmp_path / f"{j:03d}_{copy}.safetensors"
            write_sparse_lora(p, index, data, meta)
            files.append(p)
    order = files + rng.sample(files, len(files))
    _check(files, order)
    assert fast_reads["skipped"] >= len(files) // 2  # most repeats of an index took the fast path


def test_indexes_sharing_their_keys_get_the_facts_of_a_fresh_analysis(tmp_path, fast_reads):
    """One grouping plan serves every index with the same keys, and its modules' facts are found by shapes: other
    ranks, dtypes, a module whose factors disagree on the rank, a rank-0 module, and back to the first rank."""
    files = []
    for i, (rank, dtype, damage) in enumerate([(4, "F16", None), (16, "F16", None), (16, "F32", None), (4, "BF16", "up"),
                                               (16, "F16", "zero"), (4, "F16", None), (8, "F16", "up")]):
        tensors = [list(t) for t in _tensors("sd15", True, False, rank)]
        for t in tensors:
            if damage == "up" and t[0].endswith("to_k.lora_up.weight"):
                t[1] = [t[1][0], rank + 2]  # up's rank disagrees with down's
            if damage == "zero" and "attn2_to_v.lora" in t[0]:
                t[1] = [0 if d == rank else d for d in t[1]]
        index, data = _index([tuple(t) for t in tensors], dtype)
        p = tmp_path / f"{i}.safetensors"
        write_sparse_lora(p, index, data, {"ss_output_name": f"n{i}", "ss_base_model_version": "sd_v1"})
        files.append(p)
    _check(files, files + files[::-1])
    assert len(key_groups._PLANS) == 1  # (the damaged files have the same keys)
    f16, f32 = (structure.inspect_structure(files[i]).index for i in (1, 2))  # same keys and shapes, other dtype
    assert f32.module_facts is f16.module_facts and f32.gram_plan is None  # the analysis by shapes, taken over …
    assert {t.dtype for _, params in f32.modules for t in params.values()} == {"F32"}  # … with its own tensors
    problems = [summarize_structure(p).problems for p in files]
    assert not problems[0] and not problems[1] and not problems[5]
    assert problems[3] and problems[4] and problems[6]


def test_summaries_equal_the_cold_path_on_files_of_the_real_writers(tmp_path, fast_reads):
    pytest.importorskip("peft")
    pytest.importorskip("diffusers")
    pytest.importorskip("lycoris")
    from real_writers import ALL_WRITERS
    from safetensors.torch import load_file

    files = []
    for name, fn in ALL_WRITERS:
        w = fn(tmp_path / name.replace(".", "_"))
        files.append(Path(w.path))
        for i, meta in enumerate([{"ss_output_name": f"{name} again", "ss_base_model_version": "sdxl_base_v1-0"},
                                  {"modelspec.architecture": "flux-1-dev/lora", "modelspec.title": "ünï ✓"}]):
            files.append(save(tmp_path / f"{name.replace('.', '_')}_{i}.safetensors", load_file(w.path), meta))
    _check(files, files + files[::-1])
    assert fast_reads["skipped"] >= len(ALL_WRITERS)


def test_a_known_index_in_a_file_of_another_size_is_validated_again(tmp_path):
    up, down = torch.randn(320, 4).half(), torch.randn(4, 768).half()
    key = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"
    p = save(tmp_path / "a.safetensors", {f"{key}.lora_up.weight": up, f"{key}.lora_down.weight": down},
             {"ss_output_name": "a"})
    _clear_caches()
    summarize_structure(p)
    padded = tmp_path / "padded.safetensors"
    padded.write_bytes(p.read_bytes() + b"\0" * 8)
    header_index._INDEX_CACHE.clear()  # only the digest tier knows the index now
    with pytest.raises(CorruptFile, match="damaged safetensors header"):
        summarize_structure(padded)


def test_summary_caches_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(summaries._SUMMARIES, "entries", 3)
    monkeypatch.setattr(header_index, "_VALIDATED_SIZE", 3)
    _clear_caches()
    for j, (_family, base, dtype, _rank, tensors) in enumerate(varied_layouts(6, seed=9)):
        index, data = _index(tensors, dtype)
        write_sparse_lora(p := tmp_path / f"{j}.safetensors", index, data, {"ss_base_model_version": base})
        summarize_structure(p)
    assert len(summaries._SUMMARIES) == 3 and len(header_index._VALIDATED) == 3


def test_workers_share_summaries_through_their_directory(tmp_path, fast_reads):
    """What one worker process summarised, the other reads back from the scan's directory (here: this process
    with its caches emptied in between), with the same result as the cold path; a damaged or foreign entry there
    is ignored, and a file whose size does not fit the shared index is validated again."""
    rng = random.Random(11)
    files = []
    for j, (_family, base, dtype, rank, tensors) in enumerate(varied_layouts(8, seed=4)):
        index, data = _index(tensors, dtype)
        for copy in range(2):
            p = tmp_path / f"{j}_{copy}.safetensors"
            write_sparse_lora(p, index, data, kohya_metadata(rng, f"f{j}_{copy}", base, rank, WORDS, j))
            files.append(p)
    cold = {p: dataclasses.asdict(_cold(p)) for p in files}
    shared = tmp_path / "shared"
    shared.mkdir()
    summaries.share_through(shared)
    try:
        _clear_caches()
        for p in files[0::2]:  # "worker A": the first file of each index
            summarize_structure(p)
        assert len(list(shared.glob("*.json"))) == len(files) // 2
        _clear_caches()  # "worker B": nothing of its own
        fast_reads.update(skipped=0, read=0)
        for p in files[1::2]:
            assert dataclasses.asdict(summarize_structure(p)) == cold[p], p
        assert fast_reads == {"skipped": len(files) // 2, "read": 0}  # no index parsed again
        for entry in shared.glob("*.json"):
            entry.write_text("{not json")
        _clear_caches()
        assert dataclasses.asdict(summarize_structure(files[1])) == cold[files[1]]  # analysed again
        padded = tmp_path / "padded.safetensors"
        padded.write_bytes(files[1].read_bytes() + b"\0" * 8)
        _clear_caches()
        summarize_structure(files[1])  # shared again, with its data end
        _clear_caches()
        with pytest.raises(CorruptFile, match="damaged safetensors header"):
            summarize_structure(padded)
    finally:
        summaries.share_through(None)


def test_a_scan_with_workers_writes_what_an_inline_scan_writes(tmp_path):
    from lorawb_core.library import open_library, scan

    rng = random.Random(12)
    root = tmp_path / "lib"
    root.mkdir()
    layouts = varied_layouts(12, seed=6)
    for i in range(60):
        _family, base, dtype, rank, tensors = layouts[rng.randrange(len(layouts))]
        index, data = _index(tensors, dtype)
        write_sparse_lora(root / f"{i:03d}.safetensors", index, data,
                          kohya_metadata(rng, f"n{i}", base, rank, WORDS, i))
    rows = {}
    for workers in (0, 2):
        _clear_caches()
        db = open_library(tmp_path / f"w{workers}.sqlite3")
        scan(db, [str(root)], structure_only=True, workers=workers, settle_window=0, ledger=False)
        rows[workers] = {r["path"]: {k: v for k, v in r.items() if k not in ("first_seen", "last_seen")}
                         for r in db["loras"].rows}
        db.close()
    assert rows[0] == rows[2] and len(rows[0]) == 60
