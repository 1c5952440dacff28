"""LoRA Weights Builder as a ComfyUI custom-node pack.

ComfyUI imports only this file. It must import cleanly with and without ComfyUI (tests import it bare), so it
uses relative imports only and touches nothing of the host at import time beyond the node mappings.
"""

from __future__ import annotations

try:  # inside ComfyUI the pack is a package; imported as a plain module (e.g. by pytest) it is not
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
except ImportError:  # pragma: no cover - only when loaded outside a package
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

WEB_DIRECTORY = "./web"
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
