"""Install-time hook: ComfyUI-Manager runs it after requirements.txt; A1111/Forge run it at every launch.

Under A1111/Forge it installs what is missing from requirements.txt through ``launch.run_pip`` (never torch: the host
provides it). Under ComfyUI the Manager has already installed requirements.txt, and the registry's rules forbid
run-time pip calls, so it only says what is missing and how to install it.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
IMPORT_NAMES = {"pyyaml": "yaml", "sqlite-utils": "sqlite_utils"}


def missing_requirements() -> list[str]:
    missing = []
    for line in (HERE / "requirements.txt").read_text().splitlines():
        req = line.split("#", 1)[0].strip()
        if not req:
            continue
        name = re.split(r"[<>=!~ \[]", req, maxsplit=1)[0].lower()
        if name == "torch":
            continue
        if importlib.util.find_spec(IMPORT_NAMES.get(name, name.replace("-", "_"))) is None:
            missing.append(req)
    return missing


def main() -> None:
    missing = missing_requirements()
    if not missing:
        return
    try:  # A1111 / Forge
        import launch  # type: ignore[import-not-found]
    except ImportError:
        sys.stderr.write("LoRA Weights Builder needs: " + ", ".join(missing) + f"\nInstall them with: {sys.executable} "
                         f"-m pip install -r {HERE / 'requirements.txt'}\n")
        return
    for req in missing:
        launch.run_pip(f'install "{req}"', f"{req} for LoRA Weights Builder")


if __name__ == "__main__":
    main()
