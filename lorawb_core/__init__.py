"""lorawb core: read, identify and measure LoRA files. Never imports ComfyUI; torch only when tensors are read."""

from __future__ import annotations

from .errors import LorawbError
from .inspection import LoraReport, inspect_file
from .layouts import get_layout, list_layouts
from .reader import read_structure

__version__ = "0.1.0"
__all__ = ["LoraReport", "LorawbError", "get_layout", "inspect_file", "list_layouts", "read_structure"]
