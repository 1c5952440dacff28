"""The diffusers host: library LoRAs (by stable ID or path) with exact per-block weights on diffusers pipelines,
a generation call with A/B variants, ``lorawb generate`` and ``POST /lorawb/generate``.

diffusers, transformers and peft are imported only when a pipeline is used (``pip install 'lorawb[diffusers]'``).
"""

from .host import Applied, AppliedLora, DiffusersHost, pipeline_family
from .stack import LoraSpec, specs_from_request

__all__ = ["Applied", "AppliedLora", "DiffusersHost", "LoraSpec", "pipeline_family", "specs_from_request"]
