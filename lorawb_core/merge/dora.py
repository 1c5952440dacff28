"""Baking a single DoRA file into a plain LoRA, with the base model's weights given (``lorawb merge ID --base …``).

DoRA re-normalises the updated weight: with ΔW = scale·U·D and the magnitude vector m (PEFT's
``lora_magnitude_vector``, LyCORIS' ``dora_scale``), the patched weight is ``W' = m ⊙ (W+ΔW) / ‖W+ΔW‖`` with the norm
taken per output row when m has one value per output (PEFT, LyCORIS ``wd_on_output``) and per input column when it
has one per input. The plain-LoRA equivalent is the effective delta ``W' − W``: it depends on W, hence the base model,
and is full rank, so it is re-extracted at the target rank like any dense module (per module, never the whole model).
ComfyUI applies ``weight += strength·(W' − W)``, so a strength and block weights scale that delta.

Base weights are looked up by the module's canonical ComfyUI key in a checkpoint (``model.diffusion_model.…``,
``cond_stage_model.…``, ``conditioner.embedders.0.…``), a bare ComfyUI/ldm UNet file, or a diffusers-named file
(the LoRA's own module path).
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import InvalidTensor, UsageError

_TE_PREFIXES = {"clip_l": ("cond_stage_model.", "conditioner.embedders.0.", "text_encoders.clip_l."),
                "clip_h": ("cond_stage_model.model.",), "clip_g": ("text_encoders.clip_g.",)}


def base_keys(target: str, raw_path: str | None) -> list[str]:
    """The state-dict keys under which a base model file may hold the weight of ``target``, most specific first."""
    comp, _, rest = target.partition(".")
    keys = [f"model.{target}.weight", f"{target}.weight"]
    if comp == "diffusion_model":
        keys.append(f"{rest}.weight")
    keys += [f"{p}{rest}.weight" for p in _TE_PREFIXES.get(comp, ())]
    if raw_path:
        keys.append(f"{raw_path}.weight")
    return list(dict.fromkeys(keys))


class BaseModel:
    """The base model's weights, read one at a time from its safetensors file (memory-mapped)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from safetensors import safe_open

        self.path = os.fspath(path)
        if not os.path.isfile(self.path) or not self.path.endswith(".safetensors"):
            raise UsageError(f"the base model {self.path} is not a .safetensors file; give the checkpoint (or UNet "
                             "file) the DoRA was trained on.")
        self._file = safe_open(self.path, framework="pt")
        self._keys = set(self._file.keys())

    def weight(self, target: str, raw_path: str | None, shape: tuple[int, ...]):
        """The base weight of ``target`` as float64, shaped ``shape``; a clear error when missing or mis-shaped."""
        tried = base_keys(target, raw_path)
        key = next((k for k in tried if k in self._keys), None)
        if key is None:
            raise UsageError(f"the base model {os.path.basename(self.path)} has no weight for module {target} "
                             f"(looked for {', '.join(tried[:4])}); give the model the DoRA was trained on.")
        w = self._file.get_tensor(key)
        if w.numel() != _numel(shape):
            raise UsageError(f"the base weight {key} is {'×'.join(map(str, w.shape))} but the DoRA module {target} "
                             f"patches a {'×'.join(map(str, shape))} weight: this is not the DoRA's base model.")
        return w.double().reshape(shape)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def dora_delta(adapter, get, base: Any, m: int, n: int):
    """``W' − W`` (m×n, float64) of one DoRA module: see the module docstring."""
    delta = adapter.delta(get).reshape(m, n)
    mag = get("magnitude" if "magnitude" in adapter.params else "dora_scale").double().reshape(-1)
    patched = base + delta
    if mag.numel() == m:
        norm = patched.norm(dim=1, keepdim=True)
        scaled = patched * (mag[:, None] / norm.clamp(min=1e-300))
    elif mag.numel() == n:
        norm = patched.norm(dim=0, keepdim=True)
        scaled = patched * (mag[None, :] / norm.clamp(min=1e-300))
    else:
        raise InvalidTensor(f"module {adapter.module}: its DoRA magnitude has {mag.numel()} values, neither one per "
                            f"output ({m}) nor per input ({n}).")
    return scaled - base
