"""Library subcommands of ``lorawb`` (index, reindex, search, show, check, ids)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the library subcommands to the ``lorawb`` parser."""
