"""Preview settings per family, stored in ``preview_config.json`` beside the library's ``config.json``.

The file (``LORAWB_PREVIEW_CONFIG``, else ``preview_config.json`` next to :func:`~lorawb_core.library.config.config_path`)
is JSON; every key is optional::

    {"defaults": {"prompt": "{triggers}, portrait photo", "negative": "blurry", "steps": 20},
     "families": {"sdxl": {"checkpoint": "sd_xl_base_1.0.safetensors"},
                  "flux": {"unet": "flux1-dev.safetensors", "clip": ["clip_l.safetensors", "t5xxl_fp8.safetensors"],
                           "vae": "ae.safetensors"}}}

Settings for a LoRA come, last wins, from: the template's defaults (:data:`TEMPLATE_DEFAULTS`), ``defaults``, the
family's entry, then command-line overrides. In ``prompt`` and ``negative``, ``{triggers}`` becomes the LoRA's trigger
words (comma-separated) and ``{name}`` its name (:func:`fill_prompt`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..atomic import atomic_file
from ..errors import InvalidValue, UsageError
from ..families import FAMILIES

PREVIEW_CONFIG_NAME = "preview_config.json"


@dataclass(frozen=True)
class PreviewSettings:
    """Everything a built-in template needs besides the LoRAs (user templates use seed, prompt and negative)."""

    checkpoint: str = ""
    unet: str = ""  # Flux without a checkpoint: the diffusion model, two clip names and the vae
    clip: tuple[str, ...] = ()
    vae: str = ""
    weight_dtype: str = "default"
    prompt: str = "{triggers}, {name}"
    negative: str = "lowres, blurry, watermark"
    width: int = 640
    height: int = 640
    steps: int = 20
    cfg: float = 7.0
    guidance: float = 3.5  # Flux only (FluxGuidance)
    sampler: str = "euler"
    scheduler: str = "normal"
    seed: int = 0
    strength: float = 1.0  # the LoRA's strength in a preview

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["clip"] = list(self.clip)
        return d


TEMPLATE_DEFAULTS: dict[str, dict[str, Any]] = {
    "sd": {},
    "sd3": {"cfg": 4.5, "scheduler": "sgm_uniform"},
    "flux": {"cfg": 1.0, "scheduler": "simple", "negative": ""},
}
_FIELDS = {f.name: f for f in fields(PreviewSettings)}
_INTS = ("width", "height", "steps", "seed")
_FLOATS = ("cfg", "guidance", "strength")


def coerce(values: dict[str, Any], where: str) -> dict[str, Any]:
    """Check and convert settings values (names, types, ranges); ``where`` names their source in errors."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in _FIELDS:
            raise InvalidValue(f"{where}: unknown preview setting {key!r}; use one of {', '.join(_FIELDS)}.", field=key)
        try:
            if key in _INTS:
                value = int(value)
                if isinstance(values[key], float) and values[key] != value:
                    raise ValueError
            elif key in _FLOATS:
                value = float(value)
            elif key == "clip":
                if isinstance(value, str):
                    value = [v.strip() for v in value.split(",") if v.strip()]
                if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                    raise ValueError
                value = tuple(value)
            elif not isinstance(value, str):
                raise ValueError
        except (TypeError, ValueError):
            kind = "a whole number" if key in _INTS else "a number" if key in _FLOATS else (
                "a list of names" if key == "clip" else "text")
            raise InvalidValue(f"{where}: {key} must be {kind}, not {value!r}.", field=key) from None
        if key in ("width", "height") and not (64 <= value <= 8192 and value % 8 == 0):
            raise InvalidValue(f"{where}: {key} {value} must be a multiple of 8 between 64 and 8192.", field=key)
        if key == "steps" and not 1 <= value <= 1000:
            raise InvalidValue(f"{where}: steps must be between 1 and 1000.", field=key)
        if key == "seed" and not 0 <= value < 2**64:
            raise InvalidValue(f"{where}: seed must be between 0 and 2^64-1.", field=key)
        out[key] = value
    return out


def parse_size(text: str) -> dict[str, int]:
    """``"768x512"`` → ``{"width": 768, "height": 512}`` (``--size``)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text or "")
    if not m:
        raise InvalidValue(f"--size {text!r}: give WIDTHxHEIGHT, e.g. 640x640.", field="size")
    return coerce({"width": m[1], "height": m[2]}, "--size")


@dataclass
class PreviewConfig:
    """The contents of ``preview_config.json``."""

    defaults: dict[str, Any] = field(default_factory=dict)
    families: dict[str, dict[str, Any]] = field(default_factory=dict)
    path: Path | None = None

    def settings_for(self, family: str | None, overrides: dict[str, Any] | None = None) -> PreviewSettings:
        """The settings for a LoRA of ``family``: template defaults < ``defaults`` < the family's < ``overrides``."""
        fam = FAMILIES.get(family or "")
        merged: dict[str, Any] = dict(TEMPLATE_DEFAULTS.get(fam.template if fam else "", {}))
        merged.update(self.defaults)
        merged.update(self.families.get(family or "", {}))
        merged.update(coerce(overrides or {}, "override"))
        return replace(PreviewSettings(), **merged)

    def to_dict(self) -> dict[str, Any]:
        def plain(d: dict[str, Any]) -> dict[str, Any]:
            return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

        return {"defaults": plain(self.defaults),
                "families": {k: plain(v) for k, v in self.families.items()}}


def preview_config_path() -> Path:
    env = os.environ.get("LORAWB_PREVIEW_CONFIG")
    if env:
        return Path(env).expanduser()
    from ..library.config import config_path

    return config_path().parent / PREVIEW_CONFIG_NAME


def parse_preview_config(raw: Any, where: str = PREVIEW_CONFIG_NAME) -> PreviewConfig:
    """A :class:`PreviewConfig` from the file's JSON (every value checked; errors name the key)."""
    if not isinstance(raw, dict):
        raise UsageError(f"{where} must hold a JSON object.")
    unknown = set(raw) - {"defaults", "families"}
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; use defaults and families (the "
                         "servers are set in the library's config.json).")
    families = raw.get("families") or {}
    if not isinstance(families, dict):
        raise UsageError(f"{where}: 'families' must map family codes ({', '.join(FAMILIES)}) to settings.")
    bad = [k for k in families if k not in FAMILIES]
    if bad:
        raise UsageError(f"{where}: unknown family {bad[0]!r} under 'families'; use one of {', '.join(FAMILIES)}.")
    for key, value in [("defaults", raw.get("defaults") or {}), *families.items()]:
        if not isinstance(value, dict):
            raise UsageError(f"{where}: '{key}' must be an object of settings.")
    return PreviewConfig(defaults=coerce(raw.get("defaults") or {}, f"{where} defaults"),
                         families={k: coerce(v, f"{where} families.{k}") for k, v in families.items()})


def load_preview_config(path: str | os.PathLike[str] | None = None) -> PreviewConfig:
    """Read the settings file; a missing file gives the defaults, a broken one a :class:`UsageError`."""
    p = Path(path) if path is not None else preview_config_path()
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return PreviewConfig(path=p)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{p}: cannot read the preview settings ({exc}); fix or delete the file.") from None
    config = parse_preview_config(raw, str(p))
    config.path = p
    return config


def save_preview_config(config: PreviewConfig, path: str | os.PathLike[str] | None = None) -> Path:
    """Write the settings file atomically (a temporary file in the same folder, then renamed over it)."""
    p = Path(path) if path is not None else (config.path or preview_config_path())
    with atomic_file(p) as fh:
        json.dump(config.to_dict(), fh, indent=2)
        fh.write("\n")
    return p


_TIDY = re.compile(r"(\s*,\s*)+")


def fill_prompt(text: str, *, name: str, triggers: list[str]) -> str:
    """``{triggers}`` → the trigger words joined by ", ", ``{name}`` → the LoRA's name; other braces stay as typed.
    Commas left empty by a LoRA without trigger words are dropped.

    >>> fill_prompt("{triggers}, {name}, photo", name="red coat", triggers=[])
    'red coat, photo'
    """
    out = text.replace("{triggers}", ", ".join(t.strip() for t in triggers if t.strip())).replace("{name}", name)
    return _TIDY.sub(", ", out).strip(" ,")
