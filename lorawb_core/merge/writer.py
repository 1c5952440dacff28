"""Writing a merged LoRA: a safetensors file built here (so the addnet hash of its tensor data can go into its own
header), written to a temporary file next to the target, synced, then linked into place only if nothing is there.

A failure at any point (disk full included) removes the temporary file: no partial output is ever left, and an
existing file is never replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import LorawbError, UsageError

DTYPES = {"fp16": ("float16", "F16"), "bf16": ("bfloat16", "BF16"), "fp32": ("float32", "F32")}
_COPY_FROM_FIRST = ("ss_base_model_version", "ss_v2", "ss_sd_model_name", "ss_sd_model_hash", "ss_new_sd_model_hash",
                    "ss_vae_name", "ss_resolution", "ss_clip_skip", "modelspec.architecture", "modelspec.resolution",
                    "modelspec.prediction_type", "modelspec.implementation")
_NEVER_COPY = ("ss_network_dim", "ss_network_alpha", "ss_network_module", "ss_network_args", "sshs_model_hash",
               "sshs_legacy_hash", "modelspec.hash_sha256", "modelspec.merged_from", "modelspec.title",
               "ss_output_name", "lorawb_merge")
METADATA_MODES = ("new", "merge", "first")


class OutputExists(UsageError):
    """The merge's output path already exists (a merge never overwrites)."""


def check_output(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if p.suffix.lower() != ".safetensors":
        raise UsageError(f"the output {p} must end in .safetensors.")
    if p.exists():
        raise OutputExists(f"{p} already exists; a merge never overwrites: choose another name or delete it first.")
    if not p.parent.is_dir():
        raise UsageError(f"the folder {p.parent} does not exist; create it first.")
    return p


def _tag_frequency(raw: Mapping[str, str]) -> dict[str, dict[str, int]]:
    try:
        data = json.loads(raw.get("ss_tag_frequency") or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def build_metadata(sources: list, *, mode: str, dims: tuple[str, str], title: str, merge_info: dict[str, Any],
                   family: str | None) -> dict[str, str]:
    """kohya ``ss_*`` and SAI ``modelspec.*`` keys of the merged file (``mode``: new | merge | first)."""
    if mode not in METADATA_MODES:
        raise UsageError(f"metadata mode {mode!r} is unknown; use one of {', '.join(METADATA_MODES)}.")
    raws = [dict(s.analysis.report.metadata.raw) for s in sources]
    meta: dict[str, str] = {}
    if mode == "first":
        meta.update({k: v for k, v in raws[0].items() if k not in _NEVER_COPY})
    else:
        for raw in raws:
            for k in _COPY_FROM_FIRST:
                if k in raw and k not in meta:
                    meta[k] = raw[k]
    if mode == "merge":
        freq: dict[str, dict[str, int]] = {}
        for raw in raws:
            for folder, tags in _tag_frequency(raw).items():
                if isinstance(tags, dict):
                    into = freq.setdefault(str(folder), {})
                    for tag, n in tags.items():
                        into[str(tag)] = into.get(str(tag), 0) + (n if isinstance(n, int) else 0)
        if freq:
            meta["ss_tag_frequency"] = json.dumps(freq, ensure_ascii=False)
        tags = list(dict.fromkeys(t for s in sources for t in s.analysis.report.metadata.tags))
        if tags:
            meta["modelspec.tags"] = ", ".join(tags)
    if mode != "first":
        words = list(dict.fromkeys(w for s in sources for w in s.analysis.report.trigger_words))
        if words:
            meta["modelspec.trigger_phrase"] = ", ".join(words)
    meta.setdefault("modelspec.sai_model_spec", "1.0.0")
    meta.setdefault("modelspec.implementation", "https://github.com/Stability-AI/generative-models")
    if "modelspec.architecture" not in meta and family:
        meta["modelspec.architecture"] = f"{family}/lora"
    meta.update({
        "ss_network_module": "networks.lora", "ss_network_dim": dims[0], "ss_network_alpha": dims[1],
        "ss_output_name": title, "modelspec.title": title,
        "modelspec.date": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
        "modelspec.merged_from": ", ".join(s.stable_id or s.name for s in sources),
        "lorawb_merge": json.dumps(merge_info, ensure_ascii=False, sort_keys=True),
    })
    return meta


def _raw(t):
    """The tensor's bytes as a memoryview (little-endian, as safetensors stores them)."""
    import torch

    return memoryview(t.contiguous().reshape(-1).view(torch.uint8).numpy())


def write_safetensors(path: Path, tensors: Mapping[str, Any], metadata: dict[str, str]) -> None:
    """Write ``tensors`` (torch, already in the output dtype) atomically to the new file ``path``.

    The addnet hash (sha256 of the data after the header, A1111's LoRA hash) is computed first and stored as
    ``sshs_model_hash`` in the header, as sd-scripts does.
    """
    import torch

    codes = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32"}
    names = sorted(tensors)
    header: dict[str, Any] = {}
    offset = 0
    data_hash = hashlib.sha256()
    for name in names:
        t = tensors[name]
        n = t.numel() * t.element_size()
        header[name] = {"dtype": codes[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
        data_hash.update(_raw(t))
    addnet = data_hash.hexdigest()
    header["__metadata__"] = {**metadata, "sshs_model_hash": addnet}
    blob = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(tmp, "xb") as fh:
            fh.write(len(blob).to_bytes(8, "little"))
            fh.write(blob)
            for name in names:
                fh.write(_raw(tensors[name]))
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # fails if the name exists: never overwrites, even under a race
        except FileExistsError:
            raise OutputExists(f"{path} appeared while merging; a merge never overwrites: choose another name.") \
                from None
        except OSError:  # file systems without hard links
            if path.exists():
                raise OutputExists(f"{path} appeared while merging; choose another name.") from None
            os.replace(tmp, path)
    except OSError as exc:
        raise LorawbError(f"could not write {path}: {exc.strerror or exc} (is the disk full or read-only?); nothing "
                          "was written.") from None
    finally:
        if tmp.exists():
            tmp.unlink()
