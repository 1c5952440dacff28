"""Files that read but cannot be applied (NaN/Inf, factor shapes that do not multiply, rank-0 factors, no LoRA
modules, a key written twice) are *failed* everywhere: ``lorawb inspect``, the library rows, search and routes, the
compose gate and the node-side resolution of a stable ID."""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest
import torch
from library_helpers import HOUR_AGO_NS, quick_scan, tiny
from safetensors.numpy import load_file, save_file

from lorawb_core import inspect_file
from lorawb_core.cli import main
from lorawb_core.compose import StackEntry, check_stack
from lorawb_core.errors import BrokenLora, CorruptFile
from lorawb_core.library import get_lora, open_library, search
from lorawb_core.library.search import SearchQuery
from lorawb_core.reader import read_structure
from lorawb_core.refs import check_usable
from lorawb_core.samples import write_lora
from lorawb_core.server.library_routes import list_item

KEY = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"  # sd15: 640 × 768
K2 = KEY.replace("to_k", "to_q")


def _aged(p):
    os.utime(p, ns=(HOUR_AGO_NS, HOUR_AGO_NS))
    return p


def _kohya(up, down, extra=None):
    t = {f"{KEY}.lora_up.weight": up, f"{KEY}.lora_down.weight": down, f"{KEY}.alpha": torch.tensor(4.0).half(),
         f"{K2}.lora_up.weight": torch.randn(640, 4).half(), f"{K2}.lora_down.weight": torch.randn(4, 640).half(),
         f"{K2}.alpha": torch.tensor(4.0).half()}
    t.update(extra or {})
    return t


def _edited(src, dst, edit):
    """A real-format file (samples.write_lora) with one factor replaced."""
    tensors = load_file(str(src))
    edit(tensors)
    save_file(tensors, str(dst))
    return _aged(dst)


def _raw(path, header: bytes, body: bytes = b""):
    header += b" " * (-len(header) % 8)
    path.write_bytes(struct.pack("<Q", len(header)) + header + body)
    return _aged(path)


@pytest.fixture
def broken(tmp_path, write):
    """name → (path, what the reason says); every file is failed with ``--blocks``, the header-visible ones also
    without."""
    root = tmp_path / "loras"
    root.mkdir()

    def w(name, tensors):
        return _aged(write(f"loras/{name}.safetensors", tensors))

    nan_up, inf_down = torch.randn(640, 4), torch.randn(4, 768)
    nan_up[3, 1] = float("nan")
    inf_down[0, 5] = float("inf")
    loha = write_lora(tmp_path / "loha_src.safetensors", "sd15", algorithm="loha", te=False, rank=4,
                      modules=("*down_blocks_1_*attn2_to_k",))
    lokr = write_lora(tmp_path / "lokr_src.safetensors", "sd15", algorithm="lokr", te=False, rank=4,
                      modules=("*down_blocks_1_*attn2_to_k",))
    tucker = write_lora(tmp_path / "tucker_src.safetensors", "sd15", algorithm="locon_tucker", conv=True, te=False,
                        rank=4, modules=("*down_blocks_1_resnets_0_conv1",))

    def shrink(suffix, axis):
        def edit(t):
            key = next(k for k in t if k.endswith(suffix))
            t[key] = np.ascontiguousarray(np.take(t[key], range(t[key].shape[axis] - 1), axis=axis))
        return edit

    files = {
        "nan": (w("nan", _kohya(nan_up.half(), torch.randn(4, 768).half())), "NaN/Inf"),
        "inf": (w("inf", _kohya(torch.randn(640, 4).half(), inf_down.half())), "NaN/Inf"),
        "cols": (w("cols", _kohya(torch.randn(640, 6).half(), torch.randn(4, 768).half())), "6 columns but rank is 4"),
        "rank0": (w("rank0", _kohya(torch.zeros(640, 0).half(), torch.zeros(0, 768).half())), "rank-0 factors"),
        "te_cloneofsimo": (w("te_cloneofsimo", {"text_encoder:0:down": torch.randn(4, 768).half(),
                                                "text_encoder:0:up": torch.randn(768, 4).half()}),
                           "no LoRA modules found"),
        "unrelated": (w("unrelated", {"model.embed.weight": torch.randn(8, 8).half()}), "no LoRA modules found"),
        "loha": (_edited(loha, root / "loha.safetensors", shrink("hada_w1_b", 0)), "hada_w1_a"),
        "lokr": (_edited(lokr, root / "lokr.safetensors", shrink("lokr_w2_b", 0)), "lokr_w2_a"),
        "tucker": (_edited(tucker, root / "tucker.safetensors", shrink("lora_mid.weight", 1)), "does not fit down"),
    }
    return root, files


HEADER_VISIBLE = ("cols", "rank0", "te_cloneofsimo", "unrelated", "loha", "lokr", "tucker")


def test_inspect_counts_every_broken_file_as_failed_with_its_reason(broken, capsys):
    root, files = broken
    for name, (path, why) in files.items():
        with pytest.raises(BrokenLora, match=why) as info:
            inspect_file(path)
        assert info.value.report.problems, name
        if name in HEADER_VISIBLE:
            with pytest.raises(BrokenLora, match=why):
                inspect_file(path, blocks=False)
        else:  # NaN/Inf needs the tensors
            assert inspect_file(path, blocks=False).problems == []
    rc = main(["inspect", str(root), "--blocks", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 1 and doc["files"] == []
    by_name = {os.path.basename(e["path"]).split(".")[0]: e for e in doc["errors"]}
    assert set(by_name) == set(files)
    for name, (_, why) in files.items():
        assert by_name[name]["kind"] == "BrokenLora" and why in by_name[name]["error"], name
        assert by_name[name]["problems"]
    rc = main(["inspect", str(root)])
    captured = capsys.readouterr()
    assert rc == 1 and f"2 inspected, {len(HEADER_VISIBLE)} failed" in captured.out
    assert "6 columns but rank is 4" in captured.err and "download or export it again" in captured.err
    rc = main(["inspect", str(root), "--blocks"])
    assert rc == 1 and f"0 inspected, {len(files)} failed" in capsys.readouterr().out


def test_duplicated_header_keys_and_absurd_tensor_counts_are_refused(tmp_path):
    body = np.ones(2, dtype=np.float16).tobytes()
    entry = '{"dtype":"F16","shape":[2,1],"data_offsets":[0,4]}'
    dup = _raw(tmp_path / "dup.safetensors",
               f'{{"{KEY}.lora_up.weight":{entry},"{KEY}.lora_up.weight":{entry}}}'.encode(), body)
    with pytest.raises(CorruptFile, match="twice"):
        inspect_file(dup)
    from lorawb_core.reader import MAX_TENSORS

    n = MAX_TENSORS + 1
    many = ",".join(f'"t{i}":{{"dtype":"F16","shape":[1],"data_offsets":[{2 * i},{2 * i + 2}]}}' for i in range(n))
    path = _raw(tmp_path / "many.safetensors", f"{{{many}}}".encode(), b"\0" * (2 * n))
    with pytest.raises(CorruptFile, match=f"about {n:,} tensors"):
        inspect_file(path, blocks=False)


@pytest.mark.parametrize("meta", ['"__metadata__":{"ss_output_name":"x"},', ""])
def test_a_key_written_twice_anywhere_in_the_header_is_refused(tmp_path, meta):
    """The header is parsed without a duplicate-key hook when the entry names' counts prove there is none: each
    place a key can be repeated is refused, and a key name inside a tensor's name is no duplicate."""
    up, down = np.ones((4, 2), np.float16).tobytes(), np.ones((2, 4), np.float16).tobytes()
    e_up = '"dtype":"F16","shape":[4,2],"data_offsets":[0,16]'
    e_down = '"dtype":"F16","shape":[2,4],"data_offsets":[16,32]'

    def header(up_entry=e_up, extra="", head=meta, name=f"{KEY}.lora_up.weight"):
        return (f'{{{head}"{name}":{{{up_entry}}},"{KEY}.lora_down.weight":{{{e_down}}}{extra}}}').encode()

    cases = {
        "tensor": header(extra=f',"{KEY}.lora_down.weight":{{{e_down}}}'),
        "dtype": header(up_entry='"dtype":"F32",' + e_up),
        "other": header(up_entry=e_up + ',"x":1,"x":2'),
        "metadata": header(head='"__metadata__":{"a":"1","a":"2"},'),
    }
    if meta:
        cases["metadata twice"] = header(extra=',"__metadata__":{"b":"2"}')
    for name, raw in cases.items():
        with pytest.raises(CorruptFile, match="twice"):
            read_structure(_raw(tmp_path / f"{name}.safetensors", raw, up + down))
    odd = read_structure(_raw(tmp_path / "odd.safetensors", header(name='x\\"dtype\\".lora_up.weight'), up + down))
    assert sorted(odd.tensors) == sorted(['x"dtype".lora_up.weight', f"{KEY}.lora_down.weight"])
    assert odd.tensors[f"{KEY}.lora_down.weight"].shape == (2, 4)

def test_library_stores_broken_files_as_errors_without_a_strength(tmp_path, broken, capsys):
    root, files = broken
    good = tiny(root / "good.safetensors", seed=7)
    _raw(root / "dup.safetensors", b'{"a":{"dtype":"F16","shape":[1],"data_offsets":[0,2]},'
                                   b'"a":{"dtype":"F16","shape":[1],"data_offsets":[0,2]}}', b"\0\0")
    db = open_library(tmp_path / "lib.sqlite3")
    quick_scan(db, [root], ledger=False)
    rows = {r["file_name"].split(".")[0]: r for r in db["loras"].rows}
    assert rows["good"]["scan_state"] == "ready"
    for name, why in [*((n, w) for n, (_, w) in files.items()), ("dup", "twice")]:
        row = rows[name]
        assert row["scan_state"] == "error" and why in row["error"], name
        assert row["total_norm"] is None and row["unmapped_norm"] is None, name
        assert not db.execute("SELECT count(*) FROM blocks WHERE lora_id = ?", [row["id"]]).fetchone()[0]
    page = search(db, SearchQuery(state="error", limit=50))
    assert {e.name for e in page.items} == {*files, "dup"}  # the file name where the header gives none
    assert all(list_item(e)["name"] and list_item(e)["error"] for e in page.items)
    db.close()
    main(["search", "--db", str(tmp_path / "lib.sqlite3"), "--state", "error"])
    out = capsys.readouterr().out
    assert "None" not in out and " dup" in out and " te_cloneofsimo" in out
    assert os.path.exists(good)


def test_compose_and_node_resolution_refuse_broken_loras(tmp_path, broken):
    root, files = broken
    a, b = tiny(root / "a.safetensors", seed=1), tiny(root / "b.safetensors", seed=2)
    db = open_library(tmp_path / "lib.sqlite3")
    quick_scan(db, [root], ledger=False)
    ids = {r["file_name"].split(".")[0]: r["stable_id"] for r in db["loras"].rows}
    assert ids["cols"] and ids["nan"]  # readable headers get an ID (and are refused by it)
    verdict = check_stack(db, [StackEntry(ids["a"]), StackEntry(ids["nan"]), StackEntry(ids["cols"])])
    assert not verdict.ok and len(verdict.reasons) == 2
    assert "NaN/Inf" in verdict.reasons[0] and "6 columns but rank is 4" in verdict.reasons[1]
    with pytest.raises(BrokenLora, match="6 columns but rank is 4"):
        check_usable(get_lora(db, ids["cols"]))
    check_usable(get_lora(db, ids["a"]))
    no_layout = get_lora(db, ids["a"])
    no_layout.scan_state, no_layout.error = "error", "no block layout: the family has none"
    check_usable(no_layout)  # a readable LoRA without a block layout still loads uniformly
    # indexed as ready, then broken on disk: the gate measures it and refuses; the node-side check reads the header
    t = load_file(str(b))
    up = next(k for k in t if k.endswith("lora_up.weight"))
    t[up][0, 0] = np.inf
    save_file(t, str(b))
    verdict = check_stack(db, [StackEntry(ids["a"]), StackEntry(ids["b"])])
    assert not verdict.ok and "NaN/Inf" in verdict.reasons[0]
    t[up] = np.ascontiguousarray(t[up][:, :1])
    save_file(t, str(b))
    with pytest.raises(BrokenLora, match="changed since it was indexed"):
        check_usable(get_lora(db, ids["b"]))
    assert os.path.exists(a)
    db.close()


def _index_peak_mb(folder, db, *extra: str) -> float:
    """Peak RSS of a `lorawb index` run (inline) in a fresh interpreter, as that process reports it at its end: its
    VmHWM (ru_maxrss would include the RSS of the forked pytest process before exec)."""
    import subprocess
    import sys

    code = ("import re, sys; from lorawb_core.cli import main; main(['index', *sys.argv[1:], '--workers', '0']); "
            "print(re.search(r'VmHWM:\\s*(\\d+)', open('/proc/self/status').read())[1])")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code, str(folder), "--db", str(db), *extra], capture_output=True,
                         text=True, env=env, timeout=600, check=True).stdout
    return int(out.strip().splitlines()[-1]) / 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the peak RSS from /proc (Linux)")
def test_a_scans_peak_memory_stays_bounded_whatever_the_files_hold(tmp_path, capsys):
    plain, odd = tmp_path / "plain", tmp_path / "odd"
    tiny(plain / "good.safetensors", seed=1)
    tiny(odd / "good.safetensors", seed=1)
    tags = '"hero":500,' + ",".join(f'"tag{i:07d}":{i % 97 + 1}' for i in range(2_400_000))  # ~46 MB of tag frequency
    for i in range(3):
        tiny(odd / f"huge_meta_{i}.safetensors", seed=2 + i,
             metadata={"ss_tag_frequency": f'{{"10_hero":{{{tags}}}}}', "ss_output_name": f"huge{i}"})
    del tags
    from lorawb_core.reader import MAX_TENSORS

    for name, n in (("many_tensors", 150_000), ("just_under", MAX_TENSORS - 2)):
        entries = ",".join(f'"lora_unet_x{i // 2}.lora_{"down" if i % 2 else "up"}.weight":'
                           f'{{"dtype":"F16","shape":[1,1],"data_offsets":[{2 * i},{2 * i + 2}]}}' for i in range(n))
        _raw(odd / f"{name}.safetensors", f"{{{entries}}}".encode(), b"\0<" * n)
    # the structure phase (headers only, no torch) shows the header work; the full index adds phase (b)
    base_a = _index_peak_mb(plain, tmp_path / "plain_a.sqlite3", "--structure-only")
    peak_a = _index_peak_mb(odd, tmp_path / "odd_a.sqlite3", "--structure-only")
    base = _index_peak_mb(plain, tmp_path / "plain.sqlite3")
    peak = _index_peak_mb(odd, tmp_path / "odd.sqlite3")
    with capsys.disabled():
        print(f"\n[memory] index peak RSS, structure phase: plain {base_a:.0f} MB, odd files {peak_a:.0f} MB "
              f"(+{peak_a - base_a:.0f}); both phases: plain {base:.0f} MB, odd files {peak:.0f} MB (+{peak - base:.0f})")
    # one odd file costs about its header (46 MB here) plus a bounded amount, and the costs do not add up
    assert peak_a - base_a < 160 and peak - base < 200
    db = open_library(tmp_path / "odd.sqlite3")
    rows = {r["file_name"]: r for r in db["loras"].rows}
    assert "about 150,000 tensors" in rows["many_tensors.safetensors"]["error"]
    assert rows["huge_meta_0.safetensors"]["scan_state"] == "ready"
    assert json.loads(rows["huge_meta_0.safetensors"]["trigger_words"])[0] == "hero"
    db.close()


def test_headers_with_a_huge_metadata_value_get_the_same_checks(tmp_path):
    up, down = np.ones((640, 4), np.float16).tobytes(), np.ones((4, 768), np.float16).tobytes()
    big = {"ss_output_name": "big", "ss_datasets": "x" * (8 << 20)}  # decoded once, never parsed with the index

    def header(meta, up_entry=None, down_dtype="F16", end=None):
        h = {"__metadata__": meta,
             f"{KEY}.lora_up.weight": up_entry or {"dtype": "F16", "shape": [640, 4], "data_offsets": [0, len(up)]},
             f"{KEY}.lora_down.weight": {"dtype": down_dtype, "shape": [4, 768],
                                         "data_offsets": [len(up), end or len(up) + len(down)]}}
        return json.dumps(h, separators=(",", ":")).encode()

    small = read_structure(_raw(tmp_path / "small.safetensors", header({"ss_output_name": "big"}), up + down))
    large = read_structure(_raw(tmp_path / "large.safetensors", header(big), up + down))
    assert large.tensors == small.tensors and large.metadata == big
    assert inspect_file(tmp_path / "large.safetensors").module_count == 1
    cases = {
        "overlap": (header(big, {"dtype": "F16", "shape": [640, 4], "data_offsets": [2, len(up) + 2]}),
                    "offsets overlap or point outside"),
        "length": (header(big, {"dtype": "F16", "shape": [640, 3], "data_offsets": [0, len(up)]}), "does not fit"),
        "dtype": (header(big, down_dtype="Q9"), "dtype this safetensors version does not know"),
        "short": (header(big, end=len(up) + len(down) - 2), "does not fit"),
    }
    for name, (raw, why) in cases.items():
        with pytest.raises(CorruptFile, match=why):
            read_structure(_raw(tmp_path / f"{name}.safetensors", raw, up + down))
    with pytest.raises(CorruptFile, match="truncated or padded"):
        read_structure(_raw(tmp_path / "padded.safetensors", header(big), up + down + b"\0\0"))


def test_a_huge_tag_frequency_gives_its_top_tags_from_a_bounded_read():
    from lorawb_core.metadata import MAX_JSON_CHARS, parse_metadata

    tags = ",".join(f'"tag{i:07d}":{i % 7 + 1}' for i in range(MAX_JSON_CHARS // 10))
    md = parse_metadata({"ss_tag_frequency": f'{{"10_zelda":{{"zelda":90,"1girl":90,"sw\\u00f6rd":50,{tags}}}}}',
                         "ss_num_train_images": "100", "ss_network_args": "[" * (MAX_JSON_CHARS + 1)})
    assert [t.word for t in md.trigger_words[:2]] == ["zelda", "swörd"]
    assert md.trigger_words[0].share == pytest.approx(0.9)
    assert any("ss_tag_frequency" in e and "first" in e for e in md.parse_errors)
    assert any("ss_network_args" in e for e in md.parse_errors) and md.training.network_args is None
