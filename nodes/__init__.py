"""ComfyUI adapters: thin node classes over lorawb_core. The graph nodes arrive with the nodes issue."""

from __future__ import annotations

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
