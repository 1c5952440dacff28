"""The reader validates a new header itself (the safetensors library parses headers too but exposes no offsets): its
verdict must be the library's. Every header here, valid or damaged in one of the ways a header can be, is opened by
``safetensors.safe_open`` and by ``read_structure``; both accept it or both refuse it, and an accepted one gives the
library's tensors (dtype, shape) and metadata. The one deliberate difference: a key written twice, which the library
may accept (one reader keeps the first, another the last), is refused with its own message."""

from __future__ import annotations

import json
import random
import struct

import pytest
from safetensors import SafetensorError, safe_open

from lorawb_core import header_index, reader
from lorawb_core.errors import CorruptFile, LorawbError
from lorawb_core.reader import read_structure

KEY = "lora_unet_down_blocks_0_attentions_0_proj_in"
F16 = 2


@pytest.fixture(params=["orjson", "json"], autouse=True)
def parser(request, monkeypatch):
    """Every verdict with each parser the reader may use for a new index: orjson (a dependency) and the standard
    library's json (what runs without it); no index known from an earlier test."""
    if request.param == "orjson":
        import orjson

        monkeypatch.setattr(reader, "_orjson_loads", orjson.loads)
    else:
        monkeypatch.setattr(reader, "_orjson_loads", None)
    with header_index._cache_lock:
        header_index._INDEX_CACHE.clear()
        header_index._CANDIDATES.clear()
        header_index._VALIDATED.clear()
    return request.param


def _entries() -> dict:
    up, down = 320 * 4 * F16, 4 * 320 * F16
    return {
        f"{KEY}.alpha": {"dtype": "F16", "shape": [], "data_offsets": [0, 2]},
        f"{KEY}.lora_down.weight": {"dtype": "F16", "shape": [4, 320], "data_offsets": [2, 2 + down]},
        f"{KEY}.lora_up.weight": {"dtype": "F16", "shape": [320, 4], "data_offsets": [2 + down, 2 + down + up]},
    }


def _data_len(entries: dict) -> int:
    return max(e["data_offsets"][1] for e in entries.values())


def _write(path, header: bytes, data_len: int, pad: bool = True):
    if pad:  # writers pad the header with spaces to 8 bytes
        header += b" " * (-len(header) % 8)
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * data_len)
    return path


def _header(entries: dict, meta: dict | None = {"ss_output_name": "x"}) -> bytes:  # noqa: B006 - read only
    h = dict(entries)
    if meta is not None:
        h = {"__metadata__": meta, **h}
    return json.dumps(h, separators=(",", ":")).encode()


def _mutations() -> dict[str, tuple[bytes, int]]:
    """name -> (header bytes, data length)."""
    base = _entries()
    n = _data_len(base)
    out: dict[str, tuple[bytes, int]] = {"valid": (_header(base), n), "no metadata": (_header(base, None), n),
                                         "empty metadata": (_header(base, {}), n)}

    def entry(change) -> dict:
        e = json.loads(json.dumps(base))
        change(e[f"{KEY}.lora_up.weight"])
        return e

    cases = {
        "unknown dtype": lambda e: e.update(dtype="Q9"),
        "lowercase dtype": lambda e: e.update(dtype="f16"),
        "dtype not a string": lambda e: e.update(dtype=16),
        "negative dim": lambda e: e.update(shape=[-320, -4]),
        "float dim": lambda e: e.update(shape=[320.0, 4]),
        "bool dim": lambda e: e.update(shape=[True, 4]),
        "shape not a list": lambda e: e.update(shape="320x4"),
        "shape too small": lambda e: e.update(shape=[320, 3]),
        "shape too large": lambda e: e.update(shape=[320, 5]),
        "offsets reversed": lambda e: e.update(data_offsets=e["data_offsets"][::-1]),
        "three offsets": lambda e: e.update(data_offsets=[*e["data_offsets"], 9]),
        "string offsets": lambda e: e.update(data_offsets=[str(v) for v in e["data_offsets"]]),
        "float offsets": lambda e: e.update(data_offsets=[float(v) for v in e["data_offsets"]]),
        "shifted": lambda e: e.update(data_offsets=[v + 2 for v in e["data_offsets"]]),
        "no dtype": lambda e: e.pop("dtype"),
        "no shape": lambda e: e.pop("shape"),
        "no offsets": lambda e: e.pop("data_offsets"),
        "extra field": lambda e: e.update(foo=1),
        "huge dim": lambda e: e.update(shape=[2**64, 4]),
    }
    for name, change in cases.items():
        out[name] = (_header(entry(change)), n)
    out["data longer"] = (_header(base), n + 2)
    out["data shorter"] = (_header(base), n - 2)
    out["metadata value not a string"] = (_header(base, {"ss_steps": 100}), n)
    out["metadata a list"] = (json.dumps({"__metadata__": ["a"], **base}).encode(), n)
    out["not an object"] = (b"[" + json.dumps(base).encode() + b"]", n)
    out["truncated JSON"] = (_header(base)[:-3], n)
    out["trailing garbage"] = (_header(base) + b"xx", n)
    out["UTF-16"] = (_header(base).decode().encode("utf-16-le"), n)
    out["bad UTF-8 in a key"] = (_header(base).replace(b"proj_in", b"proj_\xff"), n)
    zero = {**base, "z": {"dtype": "F32", "shape": [0, 4], "data_offsets": [n, n]}}
    out["zero-size tensor"] = (_header(zero), n)
    out["entry not an object"] = (_header({**base, "z": [1, 2]}), n)
    out["no tensors"] = (_header({}), 0)
    # where the two parsers differ (orjson refuses these; the strict parse then judges) and escapes
    valid = _header(base)
    out["lone surrogate in a key"] = (valid.replace(b"proj_in", b"proj_\\ud800"), n)
    out["lone surrogate in a metadata value"] = (_header(base, {"ss_output_name": "x\ud800"}), n)
    out["lone surrogate in a metadata key"] = (_header(base, {"\udfff": "x"}), n)
    out["escaped surrogate pair in metadata"] = (_header(base, {"ss_output_name": "x\U0001F600"}), n)
    out["escaped key"] = (valid.replace(b"proj_in", b"proj_\\u0069n"), n)
    out["NaN dim"] = (valid.replace(b'"shape":[320,4]', b'"shape":[NaN,4]'), n)
    out["nested 1,500 deep"] = (valid.replace(b'"shape":[320,4]', b'"shape":' + b"[" * 1500 + b"]" * 1500), n)
    out["offset beyond 64 bits"] = (valid.replace(b'"data_offsets":[0,2]', b'"data_offsets":[0,18446744073709551618]'), n)
    out["indented"] = (json.dumps({"__metadata__": {"a": "b"}, **base}, indent=2).encode(), n)
    return out


def _library(path) -> tuple[bool, dict | None]:
    try:
        with safe_open(str(path), framework="np") as f:
            got = {k: (f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape())) for k in f.keys()}
            return True, {"tensors": got, "metadata": f.metadata() or {}}
    except (SafetensorError, OSError, ValueError, TypeError):
        return False, None


def _ours(path) -> tuple[bool, dict | None]:
    try:
        s = read_structure(path)
    except LorawbError as exc:
        assert "twice" not in str(exc)  # (the deliberate difference is tested on its own)
        return False, None
    return True, {"tensors": {k: (t.dtype, t.shape) for k, t in s.tensors.items()},
                  "metadata": s.metadata}


@pytest.mark.parametrize("name", list(_mutations()))
def test_the_reader_accepts_exactly_what_the_safetensors_library_accepts(tmp_path, name):
    header, data_len = _mutations()[name]
    path = _write(tmp_path / "f.safetensors", header, data_len)
    lib_ok, lib = _library(path)
    ours_ok, ours = _ours(path)
    assert ours_ok == lib_ok, (name, lib_ok)
    if lib_ok:
        assert ours == lib


def test_random_damage_gets_the_same_verdict(tmp_path):
    """Single-byte damage anywhere in a valid header: the same verdict (never an exception but a LorawbError)."""
    rng = random.Random(7)
    header, data_len = _mutations()["valid"]
    for i in range(300):
        raw = bytearray(header)
        at = rng.randrange(len(raw))
        raw[at] = rng.choice(b'{}[]",:0123456789 aFz\\')
        path = _write(tmp_path / f"{i}.safetensors", bytes(raw), data_len)
        lib_ok, lib = _library(path)
        try:
            ours_ok, ours = _ours(path)
        except AssertionError:  # a key written twice: refused by us only
            assert lib_ok, bytes(raw)
            continue
        assert ours_ok == lib_ok, bytes(raw)
        if lib_ok:
            assert ours == lib, bytes(raw)


def test_a_key_written_twice_is_refused_even_where_the_library_reads_one(tmp_path):
    base = _entries()
    up = f"{KEY}.lora_up.weight"
    text = _header(base).decode()
    twice = text[:-1] + f',"{up}":' + json.dumps(base[up], separators=(",", ":")) + "}"
    path = _write(tmp_path / "twice.safetensors", twice.encode(), _data_len(base))
    with pytest.raises(CorruptFile, match="twice"):
        read_structure(path)


def test_a_known_index_with_a_lone_surrogate_in_its_metadata_is_refused(tmp_path):
    base = _entries()
    good = _write(tmp_path / "good.safetensors", _header(base), _data_len(base))
    read_structure(good)  # the index is known now: the next file's index bytes are compared, not parsed
    bad = _write(tmp_path / "bad.safetensors", _header(base, {"ss_output_name": "x\ud800"}), _data_len(base))
    with pytest.raises(CorruptFile, match="lone UTF-16 surrogate"):
        read_structure(bad)
    assert read_structure(_write(tmp_path / "pair.safetensors", _header(base, {"ss_output_name": "x\U0001F600"}),
                                 _data_len(base))).metadata == {"ss_output_name": "x\U0001F600"}
