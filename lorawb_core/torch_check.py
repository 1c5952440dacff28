"""PyTorch is the host's (ComfyUI, A1111), never a dependency of ours: header work runs without it, tensor work
says in one line what to install.

The check looks for the package without importing it (importing torch costs seconds and hundreds of MB, and a
scan's worker processes import it themselves).
"""

from __future__ import annotations

import importlib.util
import sys

from .errors import TorchMissing

INSTALL_TORCH = "pip install torch"
NO_TORCH_SCAN = (f"blocks and hashes not measured: PyTorch is not installed ({INSTALL_TORCH}); the files stay "
                 "pending until the next index with it")


def torch_available() -> bool:
    """True when ``import torch`` can find the package (already imported, or on the path)."""
    if "torch" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def require_torch(what: str, instead: str | None = None) -> None:
    """Raise :class:`~lorawb_core.errors.TorchMissing` saying that ``what`` needs PyTorch and how to install it
    (``instead``: what the user can do without it)."""
    if not torch_available():
        raise TorchMissing(f"{what} needs PyTorch, which is not installed: {INSTALL_TORCH}"
                           + (f" ({instead})" if instead else ""))
