"""Which naming convention (trainer, exporter) wrote a module key: the file's ``format``."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

from ..adapters import Adapter

# (module key, algorithm name, the module's tensor keys) -> bool
_FORMAT_RULES: list[tuple[str, Callable[[str, str, tuple[str, ...]], bool]]] = [
    ("wan-fun", lambda k, a, t: k.startswith("lora_unet__")),
    ("onetrainer", lambda k, a, t: k.startswith("lora_transformer_")),
    ("simpletuner-lycoris", lambda k, a, t: k.startswith("lycoris_")),
    ("xlabs", lambda k, a, t: ".processor." in k and re.search(r"(qkv|proj)_lora\d?$", k) is not None),
    ("diffusers-legacy", lambda k, a, t: any(key.endswith(("_lora.up.weight", ".lora.up.weight", "lora_linear_layer.up.weight"))
                                          for key in t)),
    ("kohya-lycoris", lambda k, a, t: k.startswith(("lora_unet_", "lora_te")) and a not in ("lora", "locon")),
    ("kohya", lambda k, a, t: k.startswith(("lora_unet_", "lora_te", "oft_unet_"))),
    ("comfyui", lambda k, a, t: k.startswith(("diffusion_model.", "model.diffusion_model.", "clip_l.", "clip_g.",
                                           "t5xxl.", "text_encoders."))),
    ("peft-raw", lambda k, a, t: k.startswith("base_model.model.")),
    ("diffusers-peft", lambda k, a, t: k.startswith(("transformer.", "unet.", "text_encoder"))),
    ("bare", lambda k, a, t: True),
]


def format_of(key: str, adapter: Adapter) -> str:
    return _format(key, adapter.name, tuple(t.key for t in adapter.params.values()))


@lru_cache(maxsize=1 << 16)  # module keys repeat across the files of a family whatever their ranks
def _format(key: str, algorithm: str, tensor_keys: tuple[str, ...]) -> str:
    for name, rule in _FORMAT_RULES:
        if rule(key, algorithm, tensor_keys):
            return name
    return "bare"

