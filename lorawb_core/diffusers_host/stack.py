"""What a diffusers caller asks for: LoRA specs (``ID[:S][@WEIGHTS]``, JSON, the seed service's shape) and how each
is found — a stable ID or a LoRA name in the library, or a file path.

>>> LoraSpec.parse("SD1-CHR-001:0.8@OUTD")
LoraSpec(lora='SD1-CHR-001', strength=0.8, strength_clip=None, weights='OUTD')
>>> [s.lora for s in specs_from_request({"brand_id": "acme", "lora_weights": 0.7})]
['acme']
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from ..errors import InvalidValue, LoraMissing, NotInLibrary

MAX_STRENGTH = 10.0


@dataclass
class LoraSpec:
    """One LoRA of a stack: a stable ID, a library LoRA name or a ``.safetensors`` path; its strength on the
    denoiser (``strength``) and the text encoders (``strength_clip``, default the same); block weights as text
    in any dialect the profiles parser reads (a preset or profile name, a vector, ``BLOCK=v`` assignments, JSON)."""

    lora: str
    strength: float = 1.0
    strength_clip: float | None = None
    weights: str | None = None

    @property
    def clip(self) -> float:
        return self.strength if self.strength_clip is None else self.strength_clip

    @classmethod
    def parse(cls, text: str) -> LoraSpec:
        """``ID[:STRENGTH][@WEIGHTS]`` (``ID`` may be a path; a ``:`` tail that is not a number stays in it)."""
        spec, _, weights = str(text).strip().partition("@")
        head, sep, tail = spec.rpartition(":")
        strength = 1.0
        if sep and head and not head.endswith(("\\", "/")):
            try:
                strength = float(tail)
            except ValueError:
                head = spec  # a path with a colon, no strength
            else:
                spec = head
        if not spec.strip():
            raise InvalidValue(f"{text!r}: name a LoRA (a stable ID like SD1-CHR-001, or a file path) before ':' "
                               "or '@'.", field="lora")
        return cls(spec.strip(), _strength(strength, "strength"), None, weights.strip() or None)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "loras[0]") -> LoraSpec:
        """``{lora, strength?, strength_clip?, profile?|weights?}``, or the seed service's ``{brand_id, weight, type}``
        (``type`` is accepted and ignored: every entry is a LoRA)."""
        if not isinstance(d, Mapping):
            raise InvalidValue(f"{where} must be an object like {{\"lora\": \"SD1-CHR-001\", \"strength\": 0.8}}.",
                               field=where)
        lora = d.get("lora", d.get("brand_id"))
        if not isinstance(lora, str) or not lora.strip():
            raise InvalidValue(f"{where} needs 'lora' (or 'brand_id'): a stable ID or a LoRA name.", field=where)
        strength = _strength(d.get("strength", d.get("weight", 1.0)), f"{where}.strength")
        clip = d.get("strength_clip")
        weights = d.get("weights", d.get("profile"))
        if weights is not None and not isinstance(weights, (str, Mapping, list)):
            raise InvalidValue(f"{where}.weights must be text (a preset or profile name, a vector, BLOCK=v "
                               "assignments) or a JSON object of block weights.", field=f"{where}.weights")
        if isinstance(weights, (Mapping, list)):
            import json

            weights = json.dumps(weights) if isinstance(weights, Mapping) else ",".join(map(str, weights))
        return cls(lora.strip(), strength, None if clip is None else _strength(clip, f"{where}.strength_clip"),
                   weights or None)


def _strength(value: Any, field: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise InvalidValue(f"'{field}' must be a number, not {value!r}.", field=field) from None
    if not math.isfinite(out) or abs(out) > MAX_STRENGTH:
        raise InvalidValue(f"'{field}' must be a finite number between -{MAX_STRENGTH:g} and {MAX_STRENGTH:g}, not "
                           f"{value!r}.", field=field)
    return out


def specs_from_request(body: Mapping[str, Any]) -> list[LoraSpec]:
    """The LoRA stack of a request: ``loras: [...]``, or the seed service's ``lora_configs: [{brand_id, weight,
    type}]`` / ``brand_id`` + ``lora_weights``."""
    if body.get("loras") is not None:
        key, items = "loras", body["loras"]
    elif body.get("lora_configs") is not None:
        key, items = "lora_configs", body["lora_configs"]
    elif body.get("brand_id"):
        return [LoraSpec.from_dict({"brand_id": body["brand_id"], "weight": body.get("lora_weights", 1.0)},
                                   "brand_id")]
    else:
        return []
    if not isinstance(items, list):
        raise InvalidValue(f"'{key}' must be a list of LoRA entries.", field=key)
    return [LoraSpec.from_dict(d, f"{key}[{i}]") for i, d in enumerate(items)]


def is_path(value: str) -> bool:
    return value.lower().endswith(".safetensors") or os.sep in value or (os.altsep or "\x00") in value


def file_entry(path: str) -> SimpleNamespace:
    """A library-entry-like record for a LoRA file outside the library (what the compose gate reads)."""
    from ..inspection import inspect_structure

    p = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(p):
        raise LoraMissing(f"LoRA file {p} does not exist; give an existing .safetensors file or a stable ID.")
    r = inspect_structure(p).report
    return SimpleNamespace(stable_id=None, name=r.file_name, path=p, family=r.family.family, variant=r.family.variant,
                           layout_id=r.layout_id, full_layout_id=r.full_layout_id, algorithms=r.algorithms,
                           addnet=None, scan_state="error" if r.problems and not r.modules else "ready",
                           error="; ".join(r.problems) or None)


def resolve_lora(db, value: str, *, allow_paths: bool = True):
    """The library entry (or a file record) for a spec's ``lora``: a path, a stable ID, else a LoRA name.

    Raises :class:`~lorawb_core.errors.NotInLibrary` / :class:`~lorawb_core.errors.LoraMissing`;
    :class:`~lorawb_core.errors.InvalidValue` for a path when ``allow_paths`` is False (the HTTP route).
    """
    from ..library.stable_ids import parse_id
    from ..refs import resolve_entry

    if is_path(value):
        if not allow_paths:
            raise InvalidValue(f"{value!r} looks like a file path; name LoRAs by stable ID (like SD1-CHR-001) or "
                               "library name here.", field="lora")
        return file_entry(value)
    if db is None:
        raise NotInLibrary(f"{value!r} is not a file path and no library is open to look it up as a stable ID; "
                           "pass --db (or set LORAWB_DB) or give the .safetensors path.")
    if parse_id(value.strip().upper()) is not None:
        return resolve_entry(db, value)
    rows = db.execute("SELECT stable_id FROM loras WHERE stable_id IS NOT NULL AND missing = 0 AND "
                      "(lower(name) = lower(?) OR lower(file_name) = lower(?) OR lower(file_name) = lower(?)) "
                      "ORDER BY stable_id", [value, value, value + ".safetensors"]).fetchall()
    if len(rows) > 1:
        raise NotInLibrary(f"{value!r} names {len(rows)} LoRAs ({', '.join(r[0] for r in rows)}); use the stable ID.")
    if not rows:
        raise NotInLibrary(f"No LoRA with stable ID or name {value!r} in the library; find it with `lorawb search`.")
    return resolve_entry(db, rows[0][0])
