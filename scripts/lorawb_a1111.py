"""AUTOMATIC1111 / Forge entry of LoRA Weights Builder (A1111 imports every ``scripts/*.py`` of an extension).

A1111 has the extension folder on ``sys.path`` only while it imports this file, so both packages are imported here,
at the top (their submodules then import through the packages); :func:`lorawb_a1111.host.ensure_importable` puts the
folder back for the scan's worker processes. Everything else lives in :mod:`lorawb_a1111.extension`.
"""

import os
import sys

_EXTENSION_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _EXTENSION_DIR not in sys.path:
    sys.path.append(_EXTENSION_DIR)

from lorawb_a1111.extension import LorawbScript, register  # noqa: E402 - needs the path above

__all__ = ["LorawbScript"]
register()
