"""LoRA Weights Builder as a ComfyUI custom-node pack.

ComfyUI imports only this file. It must import cleanly with and without ComfyUI (tests import it bare). The pack's
own modules are imported relatively; ``lorawb_core`` is made importable by its plain name (the pack folder is
appended to ``sys.path``, after ComfyUI's own entries) so worker processes and the A1111 side find the same copy.
Inside ComfyUI (``server.PromptServer`` is running) it also starts the library service: routes, background scan.
"""

from __future__ import annotations

import os
import sys

_PACK_DIR = os.path.dirname(os.path.abspath(__file__))
if _PACK_DIR not in sys.path:
    sys.path.append(_PACK_DIR)

try:  # inside ComfyUI the pack is a package; imported as a plain module (e.g. by pytest) it is not
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
except ImportError as _exc:  # pragma: no cover - only when loaded outside a package
    if __package__:
        raise
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}
else:
    def _in_comfyui() -> bool:
        server = sys.modules.get("server")
        return server is not None and getattr(getattr(server, "PromptServer", None), "instance", None) is not None

    if _in_comfyui():
        from .nodes import host as _host

        _host.start()

WEB_DIRECTORY = "./web"
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
