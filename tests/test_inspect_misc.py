"""Hashes, metadata and trigger words, the structure cache, the CLI's JSON and demo, lazy imports, the pack root."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

from lorawb_core import inspect_file
from lorawb_core.cli import main
from lorawb_core.errors import CorruptFile
from lorawb_core.hashes import hash_file, hash_file_two_threads
from lorawb_core.metadata import parse_metadata

KEY = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k"


def _lora(write, name, meta=None, value=1.0):
    return write(name, {f"{KEY}.lora_up.weight": torch.full((640, 4), value),
                        f"{KEY}.lora_down.weight": torch.full((4, 2048), 0.5), f"{KEY}.alpha": torch.tensor(2.0)}, meta)


def test_hashes_match_a1111_definitions(write):
    p = _lora(write, "h.safetensors", {"ss_output_name": "x"})
    data = p.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    h = inspect_file(p, hashes=True).hashes
    assert h.sha256 == hashlib.sha256(data).hexdigest()
    assert h.autov2 == h.sha256[:10].upper()
    assert h.addnet == hashlib.sha256(data[8 + n:]).hexdigest()  # A1111 addnet_hash_safetensors
    assert h.autov3 == h.addnet[:12].upper()
    seen = []
    hash_file(p, 8 + n, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (len(data), len(data))


@pytest.mark.parametrize("rows", [640, 160_000])  # under and over 1 MiB (AutoV1's window)
def test_two_thread_hashes_equal_the_streamed_ones(write, rows):
    p = write(f"t{rows}.safetensors", {f"{KEY}.lora_up.weight": torch.randn(rows, 4),
                                       f"{KEY}.lora_down.weight": torch.randn(4, 2048)}, {"ss_output_name": "x"})
    (n,) = struct.unpack("<Q", p.read_bytes()[:8])
    one, two = hash_file(p, 8 + n), hash_file_two_threads(p, 8 + n)
    assert one == two and (one.autov1 is not None) == (p.stat().st_size > 0x100000)


def test_addnet_hash_ignores_metadata_edits(write):
    a = inspect_file(_lora(write, "a.safetensors", {"ss_output_name": "one"}), hashes=True, blocks=False).hashes
    b = inspect_file(_lora(write, "b.safetensors", {"ss_output_name": "two", "extra": "x" * 100}), hashes=True,
                     blocks=False).hashes
    assert a.addnet == b.addnet and a.sha256 != b.sha256


def test_metadata_training_facts_and_triggers(write):
    meta = {"ss_tag_frequency": json.dumps({"10_zelda princess": {"zelda princess": 30, "1girl": 30, "sword": 12,
                                                                   "masterpiece": 30},
                                            "5_extra": {"sword": 4, "shield": 2}}),
            "ss_num_train_images": "35", "ss_steps": "1200", "ss_learning_rate": "1e-4", "ss_network_args":
            json.dumps({"conv_dim": "8", "algo": "locon"}), "ss_sd_model_name": "illustriousXL_v01.safetensors",
            "modelspec.trigger_phrase": "zldp, hylian", "modelspec.title": "<img src=x onerror=alert(1)>",
            "ss_datasets": "{broken json"}
    report = inspect_file(_lora(write, "m.safetensors", meta))
    md = report.metadata
    assert report.trigger_words[:4] == ["zldp", "hylian", "zelda princess", "sword"]
    assert "masterpiece" not in report.trigger_words and "1girl" not in report.trigger_words
    tw = {t.word: t for t in md.trigger_words}
    assert tw["zelda princess"].count == 30 and tw["zelda princess"].share == pytest.approx(30 / 35, rel=1e-3)
    assert md.training.steps == 1200 and md.training.learning_rate == 1e-4 and md.training.images == 35
    assert md.training.network_args == {"conv_dim": "8", "algo": "locon"}
    assert md.title == "<img src=x onerror=alert(1)>"  # kept as text; rendering escapes it
    assert md.parse_errors == []  # ss_datasets is not a field lorawb uses: never decoded, so never an error
    assert report.family.family == "sdxl" and report.family.variant == "illustrious"


def test_metadata_family_and_variant_only_from_metadata():
    md = parse_metadata({"modelspec.architecture": "flux-1-schnell/lora"})
    assert md.raw["modelspec.architecture"] == "flux-1-schnell/lora"
    from lorawb_core.family_detect import from_metadata

    assert from_metadata({"modelspec.architecture": "flux-1-schnell/lora"})[:2] == ("flux", "schnell")
    assert from_metadata({"ss_base_model_version": "sd_v2_v"})[:2] == ("sd2", "768-v")
    assert from_metadata({"ss_v2": "True"})[:2] == ("sd2", None)


def test_structure_cache_reuses_index_and_keeps_metadata_apart(write, tmp_path):
    a = _lora(write, "a.safetensors", {"ss_output_name": "first"})
    b = _lora(write, "b.safetensors", {"ss_output_name": "second", "modelspec.title": "B"}, value=2.0)
    ra, rb = inspect_file(a), inspect_file(b)
    assert ra.metadata.output_name == "first" and rb.metadata.output_name == "second"
    assert rb.blocks[0].norm == pytest.approx(2 * ra.blocks[0].norm)
    # same index, data cut short: the cache must not hide the damage
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(b.read_bytes()[:-10])
    with pytest.raises(CorruptFile):
        inspect_file(cut)


def test_cli_json_is_stable(write, capsys):
    p = _lora(write, "j.safetensors", {"ss_base_model_version": "sdxl_base_v1-0"})
    assert main(["inspect", str(p), "--json", "--blocks", "--hash", "--modules"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == 1 and doc["errors"] == []
    f = doc["files"][0]
    assert set(f) >= {"schema", "path", "file_name", "size", "format", "formats", "family", "layout", "full_layout",
                      "algorithms", "rank", "ranks", "alpha", "needs_base", "module_count", "unmapped",
                      "unknown_keys", "trigger_words", "metadata", "blocks", "blocks_state", "total_norm",
                      "unmapped_norm", "hashes", "problems", "modules"}
    assert f["family"]["family"] == "sdxl" and f["layout"] == "sdxl_unet_12" and f["blocks_state"] == "ready"
    assert [b["id"] for b in f["blocks"]][:3] == ["BASE", "IN04", "IN05"]
    assert f["modules"][0]["target"] == "diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k"
    assert main(["inspect", str(p), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["files"][0]["blocks_state"] == "pending"


def test_cli_text_output_and_layouts(write, capsys):
    p = _lora(write, "t.safetensors")
    assert main(["inspect", str(p), "--blocks"]) == 0
    out = capsys.readouterr().out
    assert "sdxl" in out and "IN04" in out and "█" in out
    assert main(["layouts", "flux_dit_61"]) == 0
    assert "D18" in capsys.readouterr().out
    assert main(["layouts", "nope"]) == 1


def test_demo_builds_and_inspects(tmp_path, capsys):
    assert main(["demo", "--dir", str(tmp_path / "lib")]) == 0
    out = capsys.readouterr().out
    assert "25 inspected, 0 failed" in out or "inspected, 0 failed" in out
    for fam in ("sd15", "sdxl", "flux", "sd3", "wan", "hunyuan_video"):
        assert f"family     {fam}" in out
    assert "25 new" in out and "FLX-GEN-001" in out and ", 0 failed" in out.rsplit("library check", 1)[1]
    assert (tmp_path / "lib" / "library.sqlite3").exists()


def test_header_only_needs_no_torch_and_no_host(write):
    p = _lora(write, "lazy.safetensors")
    code = ("import sys; from lorawb_core import inspect_file; r = inspect_file(sys.argv[1], blocks=False); "
            "assert r.family.family == 'sdxl'; "
            "bad = [m for m in ('torch', 'comfy', 'server', 'folder_paths') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code, str(p)], check=True, cwd=ROOT)


def test_pack_root_imports_without_comfyui():
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('lorawb_pack', "
            f"{str(ROOT / '__init__.py')!r}, submodule_search_locations=[{str(ROOT)!r}]); "
            "m = importlib.util.module_from_spec(spec); sys.modules['lorawb_pack'] = m; spec.loader.exec_module(m); "
            "assert isinstance(m.NODE_CLASS_MAPPINGS, dict) and m.WEB_DIRECTORY == './web'")
    subprocess.run([sys.executable, "-c", code], check=True)
