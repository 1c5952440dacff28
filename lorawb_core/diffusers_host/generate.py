"""One generation on a diffusers pipeline with a LoRA stack, and A/B variants side by side.

A request holds the prompt, the stack and the sampling settings; ``variants`` (``strength=0.4,0.8`` or
``profile=ALL,OUTD``) runs the same seed once per value — every LoRA of the stack gets that strength or those block
weights — and :func:`side_by_side` labels the images in one sheet. Each run is apply → sample → unload, so runs never
see each other's LoRAs.

>>> req = GenerationRequest.from_dict({"prompt": "a cat", "loras": [{"lora": "SD1-CHR-001"}],
...                                    "variants": "strength=0.4,0.8"})
>>> [label for label, _ in req.runs()]
['strength=0.4', 'strength=0.8']
"""

from __future__ import annotations

import inspect
import io
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import InvalidValue, UsageError
from .stack import LoraSpec, specs_from_request


@dataclass(frozen=True)
class Limits:
    """What one request may ask for (an oversized request is refused naming the field)."""

    max_steps: int = 100
    max_side: int = 2048
    max_pixels: int = 2048 * 2048
    max_variants: int = 8
    max_loras: int = 8
    max_prompt: int = 4000


DEFAULT_LIMITS = Limits()

@dataclass
class GenerationRequest:
    prompt: str
    loras: list[LoraSpec] = field(default_factory=list)
    negative: str | None = None
    steps: int = 20
    width: int | None = None
    height: int | None = None
    seed: int = 0
    cfg: float | None = None
    variants: tuple[str, list[str]] | None = None  # ("strength" | "profile", values as typed)
    fallback: bool = False
    fuse: bool = False

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], limits: Limits = DEFAULT_LIMITS) -> GenerationRequest:
        """From JSON (the route's body); ``brand_id``/``lora_weights``/``lora_configs`` are accepted for ``loras``."""
        if not isinstance(d, Mapping):
            raise InvalidValue("the request must be a JSON object with at least a 'prompt'.", field="body")
        if "steps" not in d and "num_inference_steps" in d:  # the seed service's spelling
            d = {**d, "steps": d["num_inference_steps"]}
        prompt = d.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidValue("'prompt' is required: the text to generate from.", field="prompt")
        negative = d.get("negative", d.get("negative_prompt"))
        if negative is not None and not isinstance(negative, str):
            raise InvalidValue("'negative' must be text.", field="negative")
        for name, text in (("prompt", prompt), ("negative", negative or "")):
            if len(text) > limits.max_prompt:
                raise InvalidValue(f"'{name}' is longer than {limits.max_prompt} characters.", field=name)
        req = cls(prompt, specs_from_request(d), negative or None,
                  _int(d, "steps", 20, 1, limits.max_steps), _opt_int(d, "width", 8, limits.max_side),
                  _opt_int(d, "height", 8, limits.max_side), _int(d, "seed", 0, 0, 2**63 - 1),
                  _opt_float(d, "cfg", d.get("guidance_scale")), parse_variants(d.get("variants")),
                  _bool(d, "fallback"), _bool(d, "fuse"))
        req.check(limits)
        return req

    def check(self, limits: Limits = DEFAULT_LIMITS) -> None:
        if len(self.loras) > limits.max_loras:
            raise InvalidValue(f"at most {limits.max_loras} LoRAs per request, not {len(self.loras)}.", field="loras")
        if self.width and self.height and self.width * self.height > limits.max_pixels:
            raise InvalidValue(f"{self.width}×{self.height} is over the limit of {limits.max_pixels} pixels.",
                               field="width")
        if self.variants:
            if len(self.variants[1]) > limits.max_variants:
                raise InvalidValue(f"at most {limits.max_variants} variants, not {len(self.variants[1])}.",
                                   field="variants")
            if not self.loras:
                raise InvalidValue("variants change the LoRAs' strength or block weights: add at least one LoRA.",
                                   field="variants")

    def runs(self) -> list[tuple[str, list[LoraSpec]]]:
        """(label, stack) per image: one run without variants, else one per value."""
        if not self.variants:
            return [("", list(self.loras))]
        kind, values = self.variants
        out = []
        for v in values:
            if kind == "strength":
                s = float(v)
                out.append((f"strength={v}", [replace(x, strength=s, strength_clip=s) for x in self.loras]))
            else:
                out.append((f"profile={v}", [replace(x, weights=v) for x in self.loras]))
        return out


def parse_variants(value: Any) -> tuple[str, list[str]] | None:
    """``"strength=0.4,0.8"``, ``"profile=ALL,OUTD"`` or ``{"strength": [0.4, 0.8]}`` → (kind, values)."""
    if value in (None, "", {}):
        return None
    if isinstance(value, Mapping) and len(value) == 1:
        kind, values = next(iter(value.items()))
        values = [str(v) for v in values] if isinstance(values, list) else None
    elif isinstance(value, str) and "=" in value:
        kind, _, rest = value.partition("=")
        values = [v.strip() for v in (rest.split("|") if kind.strip() == "profile" and "|" in rest
                                      else rest.split(",")) if v.strip()]
    else:
        kind, values = None, None
    kind = str(kind).strip().lower() if kind is not None else None
    if kind not in ("strength", "profile") or not values:
        raise InvalidValue(f"variants {value!r}: write strength=0.4,0.8 or profile=ALL,OUTD (or "
                           '{"strength": [0.4, 0.8]}).', field="variants")
    if kind == "strength":
        for v in values:
            try:
                ok = math.isfinite(float(v)) and abs(float(v)) <= 10
            except ValueError:
                ok = False
            if not ok:
                raise InvalidValue(f"variant strength {v!r} is not a number between -10 and 10.", field="variants")
    return kind, values


def _int(d, name, default, lo, hi):
    value = d.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise InvalidValue(f"'{name}' must be an integer, not {value!r}.", field=name)
    if not lo <= int(value) <= hi:
        raise InvalidValue(f"'{name}' must be between {lo} and {hi}, not {int(value)}.", field=name)
    return int(value)


def _opt_int(d, name, lo, hi):
    if d.get(name) is None:
        return None
    value = _int(d, name, None, lo, hi)
    if value % 8:
        raise InvalidValue(f"'{name}' must be a multiple of 8, not {value}.", field=name)
    return value


def _opt_float(d, name, fallback=None):
    value = d.get(name, fallback)
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise InvalidValue(f"'{name}' must be a number, not {value!r}.", field=name) from None
    if not math.isfinite(out) or not 0 <= out <= 50:
        raise InvalidValue(f"'{name}' must be between 0 and 50, not {value!r}.", field=name)
    return out


def _bool(d, name):
    value = d.get(name, False)
    if not isinstance(value, bool):
        raise InvalidValue(f"'{name}' must be true or false.", field=name)
    return value


@dataclass
class Result:
    label: str
    image: Any  # PIL.Image
    applied: dict[str, Any]


def sample(pipe, req: GenerationRequest, callback: Callable[[], None] | None = None):
    """One image from ``pipe`` with the request's settings (a CPU generator seeded with ``req.seed``)."""
    import torch

    params = inspect.signature(pipe.__call__).parameters
    kw: dict[str, Any] = {"prompt": req.prompt, "num_inference_steps": req.steps, "output_type": "pil",
                          "generator": torch.Generator("cpu").manual_seed(req.seed)}
    if req.negative:
        if "negative_prompt" not in params:
            raise UsageError(f"{type(pipe).__name__} takes no negative prompt; leave 'negative' out.")
        kw["negative_prompt"] = req.negative
    for name, value in (("width", req.width), ("height", req.height), ("guidance_scale", req.cfg)):
        if value is not None:
            kw[name] = value
    if callback is not None and "callback_on_step_end" in params:
        def on_step(p, i, t, tensors):
            callback()
            return tensors
        kw["callback_on_step_end"] = on_step
    return pipe(**kw).images[0]


def generate(host, req: GenerationRequest, *, check: Callable[[], None] | None = None) -> list[Result]:
    """Every run of ``req`` on ``host``'s pipeline: apply, sample, unload (whatever happens). ``check`` is called
    between runs and at each step; it raises to stop (a cancelled request)."""
    out = []
    for label, specs in req.runs():
        if check is not None:
            check()
        applied = host.apply(specs, fuse=req.fuse, fallback=req.fallback)
        try:
            image = sample(host.pipe, req, check)
        finally:
            host.unload()
        out.append(Result(label, image, applied.to_dict()))
    return out


def side_by_side(results: list[Result]):
    """One sheet: the images in a row, each under its label (Pillow's default font)."""
    from PIL import Image, ImageDraw

    band = 14 if any(r.label for r in results) else 0
    w = sum(r.image.width for r in results)
    h = max(r.image.height for r in results) + band
    sheet = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(sheet)
    x = 0
    for r in results:
        sheet.paste(r.image.convert("RGB"), (x, band))
        if band:
            draw.text((x + 2, 1), r.label, fill="black")
        x += r.image.width
    return sheet


def png_bytes(image, info: Mapping[str, Any] | None = None) -> bytes:
    """PNG bytes; ``info`` goes into a ``lorawb`` text chunk as JSON (what was applied)."""
    from PIL.PngImagePlugin import PngInfo

    meta = PngInfo()
    if info is not None:
        meta.add_text("lorawb", json.dumps(info, default=str))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=meta)
    return buf.getvalue()


def load_pipeline(source: str, *, dtype: str | None = None):
    """A diffusers pipeline from a local folder (``save_pretrained``) or a Hub id already in the local cache."""
    try:
        from diffusers import DiffusionPipeline
    except ImportError:
        raise UsageError("the diffusers host needs diffusers, transformers and peft: pip install "
                         "'lorawb[diffusers]'") from None
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()  # per-module load reports would bury the one line that matters
    transformers_logging.set_verbosity_error()
    kw: dict[str, Any] = {"local_files_only": True}
    if dtype:
        import torch

        kw["torch_dtype"] = getattr(torch, dtype)
    try:
        return DiffusionPipeline.from_pretrained(source, **kw)
    except Exception as exc:  # noqa: BLE001 - diffusers raises many kinds; the user needs one clear sentence
        raise UsageError(f"cannot load a diffusers pipeline from {source!r} ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:300] if str(exc) else ''}); give a folder written by "
                         "save_pretrained (it has model_index.json) or a Hub id already in your cache.") from None
