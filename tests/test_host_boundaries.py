"""One repository, two kinds of host: the ComfyUI side (``__init__.py``, ``nodes/``) and the core never import A1111
or Forge code, and the A1111 side (``scripts/``, ``lorawb_a1111/``) never imports ComfyUI's — checked on the source, so
it holds whichever host (or none) is installed. And the A1111 side says in one line what a host lacks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
A1111_ONLY = {"modules", "gradio", "networks", "network", "backend", "launch", "lorawb_a1111"}
COMFY_ONLY = {"folder_paths", "comfy", "comfy_extras", "comfy_api", "server", "nodes", "execution"}


def top_level_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def files(*parts: str) -> list[Path]:
    out = []
    for part in parts:
        p = ROOT / part
        out += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    return out


@pytest.mark.parametrize("path", files("__init__.py", "nodes", "lorawb_core"), ids=lambda p: str(p.relative_to(ROOT)))
def test_comfyui_side_and_core_never_import_a1111(path):
    assert not top_level_imports(path) & A1111_ONLY


@pytest.mark.parametrize("path", files("scripts", "lorawb_a1111"), ids=lambda p: str(p.relative_to(ROOT)))
def test_a1111_side_never_imports_comfyui(path):
    assert not top_level_imports(path) & COMFY_ONLY


def test_a1111_entry_imports_its_packages_at_the_top():
    """A1111 has the extension folder on sys.path only while it imports scripts/*.py."""
    tree = ast.parse((ROOT / "scripts" / "lorawb_a1111.py").read_text(encoding="utf-8"))
    top = {n.module.split(".")[0] for n in tree.body if isinstance(n, ast.ImportFrom) and n.module}
    assert "lorawb_a1111" in top


def test_a_host_without_the_builtin_lora_gets_one_line_naming_it():
    import sys

    from lorawb_a1111 import host

    assert "networks" not in sys.modules  # no A1111 here: the real state of a process without the built-in Lora
    message = host.missing_features()
    assert message is not None and "\n" not in message
    assert "extensions-builtin/Lora" in message and "sd_forge_lora" in message
