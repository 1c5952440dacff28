"""The fast paths give the same results as the straightforward ones (correctness only, never timing).

* ``summarize_structure`` (the library's structure phase) vs ``inspect_structure``: the same ``loras`` columns,
  except that alpha (and problems of alpha values) come with phase (b);
* the header reader's cache (metadata anywhere in the header, padding, multi-byte text, large metadata) vs the
  safetensors library's own parse;
* ``LoraMetadata.to_dict`` vs ``dataclasses.asdict``, ``finite_json`` vs the cleaning encoder;
* the batched Gram products vs float64 products.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import struct
from pathlib import Path

import pytest
import torch
from conftest import save
from library_helpers import quick_scan
from safetensors import safe_open

from lorawb_core import header_index, reader
from lorawb_core.adapters.grams import SMALL_RANK
from lorawb_core.file_tasks import analyse, measure, structure_fields
from lorawb_core.inspection import inspect_structure, summarize_structure
from lorawb_core.inspection.measure import _batch_pairs
from lorawb_core.library import open_library
from lorawb_core.library.scan import DETAIL_COLUMNS
from lorawb_core.samples import build_sample_library, write_lora
from lorawb_core.strict_json import finite, finite_json
from lorawb_core.tensors import open_tensors


def _job(p: Path) -> tuple[str, int, int, int]:
    st = os.stat(p)
    return (str(p), st.st_size, st.st_mtime_ns, st.st_ino)


def _same_fields(p: Path, *, phase_b: bool = False) -> None:
    full = structure_fields(inspect_structure(p).report)
    fast = structure_fields(summarize_structure(p))
    assert fast["alpha"] is None
    assert {k: v for k, v in fast.items() if k != "alpha"} == {k: v for k, v in full.items() if k != "alpha"}, p
    row = analyse(_job(p))
    if full["scan_state"] == "error":  # final after phase (a): the full analysis, alpha included
        assert {k: row[k] for k in full} == full
    else:  # phase (b) writes the columns of the full analysis
        assert {k: v for k, v in row.items() if k in full and k != "alpha"} == \
            {k: v for k, v in full.items() if k != "alpha"}
        if not phase_b:
            return
        measured = measure(_job(p))
        assert {k: measured[k] for k in full if k != "scan_state"} == \
            {k: v for k, v in full.items() if k != "scan_state"}


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("samples")
    build_sample_library(root)
    return root


@pytest.fixture(scope="module")
def sample_files(sample_root):
    return sorted(sample_root.rglob("*.safetensors"))


def test_summary_equals_full_analysis_on_the_sample_library(sample_files):
    assert len(sample_files) > 10
    for p in sample_files:
        _same_fields(p)


def test_summary_equals_full_analysis_on_files_of_the_real_libraries(tmp_path):
    pytest.importorskip("peft")
    pytest.importorskip("diffusers")
    pytest.importorskip("lycoris")
    from real_writers import ALL_WRITERS

    for name, fn in ALL_WRITERS:
        w = fn(tmp_path / name.replace(".", "_"))
        _same_fields(Path(w.path))


def test_summary_of_files_sharing_one_index(tmp_path):
    """Files of one structure share the per-index work; their own metadata still decides name, family evidence."""
    a = write_lora(tmp_path / "a.safetensors", "sdxl", rank=4, seed=1, metadata={"ss_output_name": "first one",
                                                                                "ss_base_model_version": "sdxl_base"})
    b = write_lora(tmp_path / "b.safetensors", "sdxl", rank=4, seed=2, metadata={
        "ss_output_name": "second ünïcode name with a longer title", "ss_sd_model_name": "ponyDiffusionV6XL"})
    c = write_lora(tmp_path / "c.safetensors", "sdxl", rank=4, seed=3)
    for p in (a, b, c, a, b):
        _same_fields(p, phase_b=True)
    assert summarize_structure(b).family.variant == "pony" and summarize_structure(a).family.variant is None


def test_alpha_problems_and_files_without_layout(tmp_path):
    up, down = torch.randn(320, 2).half(), torch.randn(2, 768).half()
    key = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"
    nan_alpha = save(tmp_path / "nan_alpha.safetensors", {f"{key}.lora_up.weight": up, f"{key}.lora_down.weight": down,
                                                          f"{key}.alpha": torch.tensor(float("nan")).half()})
    full = structure_fields(inspect_structure(nan_alpha).report)
    fast = structure_fields(summarize_structure(nan_alpha))
    assert "alpha is nan" in full["problems"] and "alpha" not in fast["problems"]
    measured = measure(_job(nan_alpha))  # phase (b) writes the problem
    assert measured["problems"] == full["problems"]
    assert measured["scan_state"] == "error" and "alpha is nan" in measured["error"]  # failed, never a strength
    assert measured["total_norm"] is None and "blocks" not in measured
    unknown = save(tmp_path / "unknown.safetensors", {"some.weight": torch.ones(3), "x.alpha": torch.tensor(2.0)})
    _same_fields(unknown)
    assert analyse(_job(unknown))["scan_state"] == "error"


def test_library_rows_after_both_phases_are_those_of_the_full_analysis(tmp_path, sample_root, sample_files):
    db = open_library(tmp_path / "lib.sqlite3")
    quick_scan(db, [sample_root], ledger=False)
    rows = {r["path"]: r for r in db.query("SELECT * FROM loras")}
    details = {r["lora_id"]: r for r in db.query("SELECT * FROM lora_details")}
    assert len(rows) == len(sample_files)
    for path, row in rows.items():
        full = structure_fields(inspect_structure(path).report)
        if full["scan_state"] == "pending":
            full.update(scan_state="ready")
        for k, v in full.items():
            assert (details[row["id"]][k] if k in DETAIL_COLUMNS else row[k]) == v, (path, k)
    db.close()


# ---- inspect_structure vs the straightforward algorithm (no caches, one copy per module) ------------------------
def _shape_for_detection(a) -> tuple[int, int]:
    s = a.target_shape
    return (s[0] if s else 0, s[1] if len(s) > 1 else 0)


def _reference_report(path):
    """inspect_structure as it was before the per-index caches: every file analysed from scratch."""
    import copy
    from collections import Counter

    from lorawb_core.adapters import probe_module
    from lorawb_core.family_detect import ModuleShape, detect_family
    from lorawb_core.inspection import LoraReport, ModuleReport
    from lorawb_core.inspection.formats import format_of
    from lorawb_core.inspection.structure import _peft_alpha
    from lorawb_core.key_groups import plan_grouping
    from lorawb_core.key_targets import RawPath, canonical_target, normalise_native_dit, parse_module_key
    from lorawb_core.layouts import family_map
    from lorawb_core.metadata import parse_metadata
    from lorawb_core.reader import read_structure
    from lorawb_core.tensors import read_scalars

    structure = read_structure(path)
    meta = parse_metadata(structure.metadata)
    grouping = plan_grouping(structure.tensors)  # (afresh: no cached plan)
    unknown = list(grouping.unknown_keys)
    mods = []
    for module in grouping.modules:
        key = module.key
        adapter, leftover = probe_module(key, {p: structure.tensors[k] for p, k in module.params})
        unknown.extend(leftover)
        if adapter is None:
            continue
        raw = parse_module_key(key)
        if raw.component == "unet":
            raw = RawPath(raw.component, normalise_native_dit(raw.path), raw.convention)
        a = copy.copy(adapter)
        a.problems = list(adapter.problems)
        mods.append([a, raw, None, None])
    unknown = sorted(set(unknown))
    problems = []
    values = read_scalars(structure, [a.params["alpha"].key for a, *_ in mods if "alpha" in a.params])
    for a, *_ in mods:
        if "alpha" in a.params:
            a.alpha = values[a.params["alpha"].key]
            if not math.isfinite(a.alpha):
                a.problems.append(f"alpha is {a.alpha}")
        elif meta.peft_config:
            a.alpha_override, a.rs_lora = _peft_alpha(meta.peft_config, a.module)
        if a.problems:
            problems.append(f"{a.module}: {'; '.join(a.problems)}")
    shapes = [ModuleShape(raw, *_shape_for_detection(a)) for a, raw, *_ in mods]
    family = detect_family(shapes, structure.metadata)
    fm = family_map(family.family, family.depth)
    for m in mods:
        out_rows, in_cols = _shape_for_detection(m[0])
        m[2] = canonical_target(m[1], family.family, out_rows, in_cols)
        m[3] = fm.block_of(m[2].key) if fm else None
    layout = fm.choose({m[3] for m in mods if m[3]}) if fm else None
    formats = Counter(format_of(a.module, a) for a, *_ in mods)
    algos = Counter(a.algorithm for a, *_ in mods)
    ranks = Counter(a.rank for a, *_ in mods if a.rank)
    alphas = Counter(a.alpha if a.alpha is not None else a.alpha_override for a, *_ in mods)
    alphas.pop(None, None)
    reports = [
        ModuleReport(key=a.module, target=str(target), component=raw.component, block=block, algorithm=a.algorithm,
                     rank=a.rank, alpha=a.alpha if a.alpha is not None else a.alpha_override, scale=a.scale(),
                     shape=list(a.target_shape), tensor_keys=[t.key for t in a.params.values()],
                     exact=not a.requires_base, figure=a.figure if not a.decomposed else
                     "‖scale·ΔW‖_F before DoRA re-normalisation (needs the base weight)", problems=list(a.problems))
        for a, raw, target, block in mods]
    if not mods:
        problems.append("no LoRA modules found: " + ("every key is unknown" if unknown else "the file holds no tensors"))
    report = LoraReport(
        path=os.fsdecode(structure.path), file_name=structure.path.name, size=structure.size,
        mtime_ns=structure.mtime_ns, header_bytes=structure.header_bytes,
        format=formats.most_common(1)[0][0] if formats else "unknown", formats=dict(formats.most_common()),
        family=family, layout_id=layout.id if layout else None, full_layout_id=fm.full.id if fm else None,
        algorithms=dict(algos.most_common()), rank=ranks.most_common(1)[0][0] if ranks else None,
        ranks=sorted(ranks), alpha=alphas.most_common(1)[0][0] if alphas else None, modules=reports,
        unmapped=sorted(a.module for a, raw, target, block in mods if block is None), unknown_keys=list(unknown),
        metadata=meta, needs_base=any(a.requires_base for a, *_ in mods), problems=problems)
    return report, [(a, raw, target, block) for a, raw, target, block in mods]


def _same_as_reference(p: Path) -> None:
    ref, ref_mods = _reference_report(p)
    analyses = []
    for _ in range(2):  # cold, then from the caches
        analysis = inspect_structure(p)
        # repr: NaN alphas compare equal as text
        assert repr(analysis.report.to_dict(modules=True)) == repr(ref.to_dict(modules=True)), p
        assert repr(analysis.report) == repr(ref)
        assert repr([(type(m.adapter), vars(m.adapter), m.raw, m.target, m.block) for m in analysis.modules]) == \
            repr([(type(a), vars(a), raw, target, block) for a, raw, target, block in ref_mods])
        analyses.append(analysis)
    first, second = analyses  # nothing mutable is shared between two analyses
    for a, b in zip(first.modules, second.modules, strict=True):
        assert a.adapter is not b.adapter and a.adapter.problems is not b.adapter.problems
    for a, b in zip(first.report.modules, second.report.modules, strict=True):
        assert a.shape is not b.shape and a.tensor_keys is not b.tensor_keys and a.problems is not b.problems


def test_inspect_structure_equals_the_reference_on_the_sample_library(sample_files):
    for p in sample_files:
        _same_as_reference(p)


def test_inspect_structure_equals_the_reference_on_shared_indexes_and_odd_files(tmp_path):
    up, down = torch.randn(320, 2).half(), torch.randn(2, 768).half()
    key = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"
    files = [save(tmp_path / "nan_alpha.safetensors", {f"{key}.lora_up.weight": up, f"{key}.lora_down.weight": down,
                                                       f"{key}.alpha": torch.tensor(float("nan")).half()}),
             save(tmp_path / "alpha.safetensors", {f"{key}.lora_up.weight": up, f"{key}.lora_down.weight": down,
                                                   f"{key}.alpha": torch.tensor(1.0).half()}),
             save(tmp_path / "unknown.safetensors", {"some.weight": torch.ones(3)}),
             save(tmp_path / "empty.safetensors", {})]
    for i, meta in enumerate([{"ss_sd_model_name": "pony"}, {"ss_base_model_version": "sd_v1"}, {}]):
        files.append(write_lora(tmp_path / f"x{i}.safetensors", "sdxl", rank=4, seed=i, metadata=meta))
    for p in files + files:
        _same_as_reference(p)


# ---- the header reader ---------------------------------------------------------------------------------------
def _write_header(path: Path, header: dict, *, metadata_at: str, pad: str = " ", data: bytes = b"") -> Path:
    items = [(k, v) for k, v in header.items() if k != "__metadata__"]
    meta = header.get("__metadata__")
    if meta is not None:
        entry = ("__metadata__", meta)
        pos = {"start": 0, "middle": len(items) // 2, "end": len(items)}[metadata_at]
        items.insert(pos, entry)
    blob = json.dumps(dict(items), ensure_ascii=False, separators=(",", ":")).encode()
    blob += pad.encode() * (-len(blob) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        fh.write(data)
    return path


def _index(n_tensors: int) -> tuple[dict, bytes]:
    header, offset = {}, 0
    for i in range(n_tensors):
        header[f"lora_unet_down_blocks_0_attentions_0_proj_{i:03d}.alpha"] = {
            "dtype": "F32", "shape": [], "data_offsets": [offset, offset + 4]}
        offset += 4
    return header, b"\0" * offset


def _reference(p: Path) -> tuple[dict, dict]:
    with open(p, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        header = json.loads(fh.read(n))
    with safe_open(str(p), framework="np") as f:
        meta = f.metadata() or {}
    header.pop("__metadata__", None)
    return header, meta


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_reader_cache_matches_a_full_parse(tmp_path, where):
    index, data = _index(40)
    metas = [{"ss_output_name": "a"}, {"ss_output_name": "bb", "x": "}{\"__metadata__\":,"},
             {"ss_output_name": "ünïcödé ✓ " * 7, "ss_tag_frequency": json.dumps({"1_x": {"y": 3}})},
             {"big": "z" * 200_000, "ss_output_name": "large metadata (over the first decode window)"},
             {}, {"ss_output_name": "a"}]
    digests = set()
    for i, meta in enumerate(metas * 2):
        for pad in (" ", "\n"):
            p = _write_header(tmp_path / f"{where}_{i}_{ord(pad)}.safetensors", {**index, "__metadata__": meta},
                              metadata_at=where, pad=pad, data=data)
            s = reader.read_structure(p)
            header, ref_meta = _reference(p)
            assert s.metadata == ref_meta
            assert {k: (t.dtype, list(t.shape), [t.start, t.end]) for k, t in s.tensors.items()} == \
                {k: (v["dtype"], v["shape"], v["data_offsets"]) for k, v in header.items()}
            digests.add(s.index_digest)
    assert len(digests) == 1  # one index, whatever the metadata and the padding


def test_reader_cache_refuses_a_different_index_or_size(tmp_path):
    index, data = _index(8)
    ok = _write_header(tmp_path / "ok.safetensors", {**index, "__metadata__": {"a": "1"}}, metadata_at="end",
                       data=data)
    reader.read_structure(ok)
    changed = dict(index)
    key = next(iter(changed))
    changed[key] = {**changed[key], "dtype": "I32"}
    other = _write_header(tmp_path / "other.safetensors", {**changed, "__metadata__": {"a": "2"}}, metadata_at="end",
                          data=data)
    assert reader.read_structure(other).tensors[key].dtype == "I32"
    short = _write_header(tmp_path / "short.safetensors", {**index, "__metadata__": {"a": "3"}}, metadata_at="end",
                          data=data[:-4])
    with pytest.raises(Exception, match="damaged safetensors header"):
        reader.read_structure(short)
    bad_meta = _write_header(tmp_path / "bad.safetensors", {**index, "__metadata__": {"a": 1}}, metadata_at="end",
                             data=data)
    with pytest.raises(Exception, match="damaged safetensors header"):
        reader.read_structure(bad_meta)


def test_reader_survives_caches_cleared_from_outside(tmp_path):
    index, data = _index(8)
    p = _write_header(tmp_path / "a.safetensors", {**index, "__metadata__": {"a": "1"}}, metadata_at="end", data=data)
    first = reader.read_structure(p)
    header_index._INDEX_CACHE.clear()  # as bench_inspect's cold pass does
    again = reader.read_structure(p)
    assert again.index_digest == first.index_digest and again.tensors == first.tensors
    assert reader.read_structure(p).metadata == {"a": "1"}


# ---- plain-data conversions ------------------------------------------------------------------------------------
def test_metadata_to_dict_equals_asdict(sample_files):
    for p in sample_files:
        m = inspect_structure(p).report.metadata
        ref = dataclasses.asdict(m)
        assert m.to_dict(include_raw=True) == ref and list(m.to_dict(include_raw=True)) == list(ref)
        ref.pop("raw")
        assert json.dumps(m.to_dict()) == json.dumps(ref)
        assert m.to_json() == finite_json(m.to_dict())


def test_metadata_to_json_cleans_non_finite_values():
    from lorawb_core.metadata import parse_metadata

    m = parse_metadata({"ss_network_args": '{"conv_alpha": NaN, "dropout": [Infinity, 0.5]}', "ss_unet_lr": "nan",
                        "ss_tag_frequency": '{"1_x": {"x": 2}}', "ss_output_name": "ü"})
    assert m.to_json() == finite_json(m.to_dict())
    back = json.loads(m.to_json())
    assert back["training"]["network_args"] == {"conv_alpha": None, "dropout": [None, 0.5]}
    assert back["output_name"] == "ü" and back["trigger_words"][0]["word"] == "x"


def test_finite_json_equals_the_cleaning_encoder():
    values = [{"a": [1.5, float("nan"), (2, float("inf"))], "b": {"c": None, "d": "ü"}}, ["x", 1, 2.0], {},
              {"e": -float("inf")}, "plain", 3]
    for v in values:
        assert finite_json(v) == json.dumps(finite(v), ensure_ascii=False, separators=(",", ":"))
    assert finite_json({"a": float("nan"), "b": [float("-inf"), 1.0]}) == '{"a":null,"b":[null,1.0]}'
    assert finite_json({"p": Path("x")}, default=str) == '{"p":"x"}'


# ---- Gram products ---------------------------------------------------------------------------------------------
def test_batched_grams_equal_float64_products():
    from lorawb_core.adapters.base import lowrank_grams_batch

    torch.manual_seed(0)
    pairs = []
    for m, n, r, dt in [(320, 768, 4, torch.float16), (640, 640, 32, torch.bfloat16), (5, 3, 2, torch.float32),
                        (3072, 3072, 16, torch.float16), (10, 7, 1, torch.float16), (1280, 2560, 64, torch.float16)]:
        for _ in range(3):
            pairs.append((torch.randn(m, r).to(dt), torch.randn(r, n).to(dt)))
    pairs.append((torch.randn(64, 8, 1, 1).half(), torch.randn(8, 32, 3, 3).half()))
    for (u, d), (gu, gd) in zip(pairs, lowrank_grams_batch(pairs), strict=True):
        u64, d64 = u.reshape(u.shape[0], -1).double(), d.reshape(d.shape[0], -1).double()
        ref_u, ref_d = u64.T @ u64, d64 @ d64.T
        assert gu.dtype == torch.float64 and gd.dtype == torch.float64
        assert torch.allclose(gu, ref_u, rtol=1e-5, atol=1e-5 * float(ref_u.abs().max()))
        assert torch.allclose(gd, ref_d, rtol=1e-5, atol=1e-5 * float(ref_d.abs().max()))
        e, ref = float((gu * gd).sum()), float((ref_u * ref_d).sum())
        assert math.isclose(e, ref, rel_tol=1e-5)


def _save_in_order(path: Path, tensors: dict) -> Path:
    """A safetensors file with the tensors' data in the given order (the library would sort them by dtype)."""
    names = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32", torch.uint8: "U8"}
    header, blobs, offset = {}, [], 0
    for key, t in tensors.items():
        raw = t.contiguous().view(torch.uint8).numpy().tobytes() if t.dim() else \
            t.reshape(1).view(torch.uint8).numpy().tobytes()
        header[key] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + b"".join(blobs))
    return path


def _dense_norms(path: Path) -> dict[str, float]:
    """‖scale·ΔW‖_F of every module from the dense float64 reconstruction (the adapters' own delta())."""
    from lorawb_core.tensors import open_tensors

    analysis = inspect_structure(path)
    out = {}
    with open_tensors(analysis.structure) as loader:
        for m in analysis.modules:
            a = m.adapter
            out[a.module] = float(a.delta(lambda param, a=a: loader.get(a.params[param].key)).double().norm())
    return out


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("rank", [1, 4, 16, 32])
def test_block_norms_match_dense_for_dtypes_ranks_and_odd_offsets(tmp_path, dtype, rank):
    """The batched Grams (direct views of the map, or staged bytes where an offset does not suit the dtype) give
    the dense norms; an odd-length byte tensor first in the file puts every factor at an odd offset."""
    from lorawb_core import inspect_file

    torch.manual_seed(rank)
    tensors = {}
    keys = ["lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k",
            "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_v",
            "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"]
    for i, key in enumerate(keys):
        n_in = 768 if "attn2" in key else 320
        tensors[f"{key}.lora_up.weight"] = torch.randn(320, rank).to(dtype)
        tensors[f"{key}.lora_down.weight"] = (torch.randn(rank, n_in) * (i + 1)).to(dtype)
        tensors[f"{key}.alpha"] = torch.tensor(float(rank) / 2).to(dtype)
    for odd in (False, True):
        p = _save_in_order(tmp_path / f"f{odd}.safetensors",
                           {**({"a_odd_bytes": torch.ones(3, dtype=torch.uint8)} if odd else {}), **tensors})
        if odd:
            assert all(t.start % 2 == 1 for k, t in reader.read_structure(p).tensors.items() if k != "a_odd_bytes")
        report = inspect_file(p, spectra=False)
        analysis = inspect_structure(p)
        with open_tensors(analysis.structure) as loader:
            _, pairs = _batch_pairs(loader, analysis)
            direct = {isinstance(f.data, torch.Tensor) for pair in pairs for f in pair}
            del pairs
        # torch views of the map where the offsets allow and the rank takes the direct path, else bytes
        assert direct == {not odd and rank >= SMALL_RANK}
        dense = _dense_norms(p)
        for r in report.modules:
            assert r.norm == pytest.approx(dense[r.key], rel=1e-5), (r.key, odd)


def test_released_pages_read_back_the_same_tensors(tmp_path):
    """A streaming reader drops the pages it has read (``release``): a view taken before and a read after give the
    file's values, and the file is unchanged."""
    from safetensors.torch import save_file

    p = tmp_path / "t.safetensors"
    tensors = {f"m{i}.lora_down.weight": torch.randn(4, 320 + i) for i in range(8)}
    save_file(tensors, str(p))
    before = p.read_bytes()
    structure = inspect_structure(p).structure
    with open_tensors(structure, populate=False) as loader:
        early = loader.get("m0.lora_down.weight")
        loader.release()
        assert torch.equal(early, tensors["m0.lora_down.weight"])
        for key, t in tensors.items():
            assert torch.equal(loader.get(key), t)
            loader.release()
    assert p.read_bytes() == before
