"""Every kind of bad file gets a specific, actionable error; a batch goes on past it; nothing is written."""

from __future__ import annotations

import builtins
import errno
import json
import os
import pickle
import struct

import pytest
import torch

from lorawb_core import inspect_file, read_structure
from lorawb_core.cli import main
from lorawb_core.errors import BrokenLora, CorruptFile, LorawbError, UnreadableFile, UnsupportedFormat

KEY = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"


@pytest.fixture
def good(write):
    return write("good.safetensors", {f"{KEY}.lora_up.weight": torch.randn(640, 4),
                                      f"{KEY}.lora_down.weight": torch.randn(4, 640),
                                      f"{KEY}.alpha": torch.tensor(4.0)})


def _raw(tmp_path, name, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def _header(path):
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def _with_header(tmp_path, name, header, body):
    hb = json.dumps(header).encode()
    return _raw(tmp_path, name, struct.pack("<Q", len(hb)) + hb + body)


@pytest.mark.parametrize("name,data,exc,needle", [
    ("zero.safetensors", b"", CorruptFile, "empty (0 bytes)"),
    ("short.safetensors", b"\x01\x02\x03", CorruptFile, "too short"),
    ("huge.safetensors", struct.pack("<Q", 200 * 1024 * 1024) + b"{}", CorruptFile, "header claims 209,715,200 bytes"),
    ("longer.safetensors", struct.pack("<Q", 5000) + b"{}" + b" " * 100, CorruptFile, "truncated"),
    ("text.safetensors", b"hello, this is a readme file\n" * 3, UnsupportedFormat, "a text file"),
    ("lfs.safetensors", b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\n", UnsupportedFormat, "Git LFS"),
    ("page.safetensors", b"<!DOCTYPE html><html><body>login</body></html>", UnsupportedFormat, "HTML"),
    ("notjson.safetensors", struct.pack("<Q", 6) + b"{hello", CorruptFile, "not a JSON object"),
    ("array.safetensors", struct.pack("<Q", 2) + b"[]", UnsupportedFormat, "no safetensors JSON header"),
    ("pickled.safetensors", pickle.dumps({"a": 1}, protocol=4), UnsupportedFormat, "Python pickle"),
    ("zipped.safetensors", b"PK\x03\x04" + b"\0" * 60, UnsupportedFormat, "PyTorch zip/pickle"),
])
def test_bad_bytes(tmp_path, name, data, exc, needle):
    p = _raw(tmp_path, name, data)
    with pytest.raises(exc) as info:
        read_structure(p)
    assert needle in str(info.value)
    assert name in str(info.value)
    assert p.read_bytes() == data  # nothing written


def test_pickle_suffix_never_opened(tmp_path):
    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    p = _raw(tmp_path, "evil.ckpt", pickle.dumps(Boom()))
    with pytest.raises(UnsupportedFormat, match="convert it to .safetensors"):
        inspect_file(p)
    assert not (tmp_path / "pwned").exists()


def test_truncated_data(tmp_path, good):
    p = _raw(tmp_path, "trunc.safetensors", good.read_bytes()[:-100])
    with pytest.raises(CorruptFile, match="truncated or padded"):
        inspect_file(p)


def test_overlapping_offsets(tmp_path, good):
    header, body = _header(good)
    header[f"{KEY}.extra"] = {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}
    with pytest.raises(CorruptFile, match="offsets overlap or point outside"):
        inspect_file(_with_header(tmp_path, "overlap.safetensors", header, body))


def test_offsets_outside_data(tmp_path, good):
    header, body = _header(good)
    k = f"{KEY}.alpha"
    start, end = header[k]["data_offsets"]
    header[k]["data_offsets"] = [start + 10**6, end + 10**6]
    with pytest.raises(CorruptFile):
        inspect_file(_with_header(tmp_path, "outside.safetensors", header, body))


def test_unknown_dtype(tmp_path, good):
    header, body = _header(good)
    header[f"{KEY}.alpha"]["dtype"] = "Q9"
    with pytest.raises(CorruptFile, match="dtype"):
        inspect_file(_with_header(tmp_path, "dtype.safetensors", header, body))


def test_nan_module_makes_the_file_failed_and_is_flagged(write):
    up = torch.randn(640, 4)
    up[3, 1] = float("nan")
    k2 = KEY.replace("to_q", "to_k")
    p = write("nan.safetensors", {f"{KEY}.lora_up.weight": up, f"{KEY}.lora_down.weight": torch.randn(4, 640),
                                   f"{k2}.lora_up.weight": torch.randn(640, 4),
                                   f"{k2}.lora_down.weight": torch.ones(4, 640)})
    assert inspect_file(p, blocks=False).problems == []  # NaN/Inf needs the tensors
    with pytest.raises(BrokenLora, match="NaN/Inf values") as info:
        inspect_file(p)
    report = info.value.report
    bad = [m for m in report.modules if m.nonfinite]
    assert [m.key for m in bad] == [KEY]
    assert "NaN/Inf" in report.problems[0]
    good_mod = [m for m in report.modules if m.key == k2][0]
    assert good_mod.norm is not None and good_mod.norm > 0
    assert inspect_file(p, check=False).problems == report.problems


def test_shape_mismatch_reported(write):
    p = write("mismatch.safetensors", {f"{KEY}.lora_up.weight": torch.randn(640, 8),
                                        f"{KEY}.lora_down.weight": torch.randn(4, 640)})
    with pytest.raises(BrokenLora, match="rank is 4"):  # visible from the header alone
        inspect_file(p, blocks=False)
    report = inspect_file(p, check=False)
    (m,) = report.modules
    assert any("rank is 4" in prob for prob in m.problems)
    assert m.norm is None
    assert KEY in report.problems[0]


def test_unknown_keys_listed_not_dropped(write):
    p = write("unknown.safetensors", {f"{KEY}.lora_up.weight": torch.randn(640, 4),
                                       f"{KEY}.lora_down.weight": torch.randn(4, 640),
                                       "some.random.tensor": torch.zeros(3), "orphan.alpha": torch.tensor(1.0)})
    report = inspect_file(p)
    assert report.unknown_keys == ["orphan.alpha", "some.random.tensor"]
    assert len(report.modules) == 1


def test_no_modules(write):
    with pytest.raises(BrokenLora, match="no LoRA modules found") as info:
        inspect_file(write("empty.safetensors", {"a": torch.zeros(2)}), blocks=False)
    report = info.value.report
    assert report.family.family == "unknown" and report.family.reason
    assert report.problems


def test_unreadable_permissions(good, monkeypatch, capsys):
    """chmod 0 denies a normal user; root (CI) reads any file, so ``open`` and ``os.open`` answer for this path as the
    kernel answers a user without read permission (EACCES) — the test runs the same way under both."""
    denied = os.fsdecode(good)

    def guard(real):
        def opener(file, *args, **kwargs):
            if isinstance(file, (str, bytes, os.PathLike)) and os.path.abspath(os.fsdecode(file)) == denied:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), denied)
            return real(file, *args, **kwargs)
        return opener

    monkeypatch.setattr(builtins, "open", guard(builtins.open))
    monkeypatch.setattr(os, "open", guard(os.open))
    good.chmod(0)
    try:
        with pytest.raises(UnreadableFile, match="permission denied; make the file readable"):
            inspect_file(good)
        assert main(["inspect", denied]) == 1  # the command lists it as failed with the reason
        assert "permission denied" in capsys.readouterr().err
    finally:
        good.chmod(0o644)


def test_missing_file(tmp_path):
    with pytest.raises(UnreadableFile, match="no such file"):
        inspect_file(tmp_path / "nope.safetensors")


def test_odd_file_names(tmp_path, good):
    for name in ["ünïcødé 名前 (v2) [final].safetensors", "space name.safetensors"]:
        p = tmp_path / name
        p.write_bytes(good.read_bytes())
        assert inspect_file(p).file_name == name
    raw = os.fsencode(tmp_path) + b"/bad\xffname.safetensors"
    with open(raw, "wb") as fh:
        fh.write(good.read_bytes())
    report = inspect_file(raw.decode("utf-8", "surrogateescape"))
    assert report.modules


def test_batch_goes_on_and_exit_code(tmp_path, good, capsys):
    bad = _raw(tmp_path, "zbad.safetensors", b"")
    rc = main(["inspect", str(tmp_path), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 1
    assert [os.path.basename(f["path"]) for f in out["files"]] == ["good.safetensors"]
    assert out["errors"][0]["path"] == str(bad) and out["errors"][0]["kind"] == "CorruptFile"
    assert main(["inspect", str(good)]) == 0
    assert main(["inspect"]) == 2
    assert main(["bogus"]) == 2


def test_errors_share_one_base():
    for exc in (CorruptFile, UnreadableFile, UnsupportedFormat):
        assert issubclass(exc, LorawbError)
