"""Which naming convention (trainer, exporter) wrote a module key: the file's ``format``."""

from __future__ import annotations

import re
from collections.abc import Callable

from ..adapters import Adapter

_FORMAT_RULES: list[tuple[str, Callable[[str, Adapter], bool]]] = [
    ("wan-fun", lambda k, a: k.startswith("lora_unet__")),
    ("onetrainer", lambda k, a: k.startswith("lora_transformer_")),
    ("simpletuner-lycoris", lambda k, a: k.startswith("lycoris_")),
    ("xlabs", lambda k, a: ".processor." in k and re.search(r"(qkv|proj)_lora\d?$", k) is not None),
    ("diffusers-legacy", lambda k, a: any(t.key.endswith(("_lora.up.weight", ".lora.up.weight", "lora_linear_layer.up.weight"))
                                          for t in a.params.values())),
    ("kohya-lycoris", lambda k, a: k.startswith(("lora_unet_", "lora_te")) and a.name not in ("lora", "locon")),
    ("kohya", lambda k, a: k.startswith(("lora_unet_", "lora_te", "oft_unet_"))),
    ("comfyui", lambda k, a: k.startswith(("diffusion_model.", "model.diffusion_model.", "clip_l.", "clip_g.",
                                           "t5xxl.", "text_encoders."))),
    ("peft-raw", lambda k, a: k.startswith("base_model.model.")),
    ("diffusers-peft", lambda k, a: k.startswith(("transformer.", "unet.", "text_encoder"))),
    ("bare", lambda k, a: True),
]


def format_of(key: str, adapter: Adapter) -> str:
    for name, rule in _FORMAT_RULES:
        if rule(key, adapter):
            return name
    return "bare"

