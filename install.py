"""Install-time hook: ComfyUI-Manager runs it after requirements.txt; A1111/Forge run it at every launch.

It compares the installed version of each package in requirements.txt with its floor. Under A1111/Forge it installs
what is missing or too old through ``launch.run_pip`` (never torch: the host provides it). Under ComfyUI the Manager
has already installed requirements.txt, and the registry's rules forbid run-time pip calls, so it says what is
missing or too old and the pip command that fixes it.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

HERE = Path(__file__).resolve().parent
_OPS = {">=": lambda a, b: a >= b, ">": lambda a, b: a > b, "==": lambda a, b: a == b, "<=": lambda a, b: a <= b,
        "<": lambda a, b: a < b, "!=": lambda a, b: a != b}


@dataclass
class Unmet:
    """One line of requirements.txt the environment does not satisfy; ``installed`` is None when absent."""

    requirement: str
    name: str
    installed: str | None

    def __str__(self) -> str:
        if self.installed is None:
            return f"{self.requirement} (not installed)"
        return f"{self.requirement} ({self.installed} is installed)"


def _release(text: str) -> tuple[int, ...]:
    """The release numbers of a version (``4.2.1`` → (4, 2, 1); ``4.0rc1`` → (4, 0)), trailing zeros dropped."""
    match = re.match(r"\s*v?(\d+(?:\.\d+)*)", text)
    parts = [int(p) for p in match.group(1).split(".")] if match else [0]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def satisfies(installed: str, specifier: str) -> bool:
    """Whether version ``installed`` meets ``specifier`` (``>=4,<5``): :mod:`packaging` when the environment has it
    (pip and setuptools depend on it), else a comparison of release numbers."""
    if not specifier.strip():
        return True
    try:
        from packaging.specifiers import InvalidSpecifier, SpecifierSet
        from packaging.version import InvalidVersion, Version
    except ImportError:
        pass
    else:
        try:
            return SpecifierSet(specifier).contains(Version(installed), prereleases=True)
        except (InvalidSpecifier, InvalidVersion):
            pass
    for clause in specifier.split(","):
        match = re.fullmatch(r"\s*(>=|<=|==|!=|>|<)\s*([^\s]+)\s*", clause)
        if match and not _OPS[match.group(1)](_release(installed), _release(match.group(2))):
            return False
    return True


def parse_requirement(line: str) -> tuple[str, str] | None:
    """``name>=1.2  # note`` → (``name``, ``>=1.2``); None for blank and comment lines."""
    req = line.split("#", 1)[0].split(";", 1)[0].strip()
    if not req:
        return None
    match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*)", req)
    return (match.group(1), match.group(2).strip()) if match else None


def unmet_requirements(lines: list[str] | None = None, installed_version=version) -> list[Unmet]:
    """The requirements (default: this pack's requirements.txt) that are missing or too old; torch is skipped."""
    if lines is None:
        lines = (HERE / "requirements.txt").read_text(encoding="utf-8").splitlines()
    unmet = []
    for line in lines:
        parsed = parse_requirement(line)
        if parsed is None or parsed[0].lower() == "torch":
            continue
        name, spec = parsed
        try:
            have = installed_version(name)
        except PackageNotFoundError:
            unmet.append(Unmet(line.split("#", 1)[0].strip(), name, None))
            continue
        if not satisfies(have, spec):
            unmet.append(Unmet(line.split("#", 1)[0].strip(), name, have))
    return unmet


def report(unmet: list[Unmet]) -> str:
    """What a ComfyUI user reads: each unmet requirement and the one pip command that installs them all."""
    quoted = " ".join(f'"{u.requirement}"' for u in unmet)
    return ("LoRA Weights Builder needs: " + ", ".join(map(str, unmet)) + "\n"
            f"Install them with: {sys.executable} -m pip install {quoted}\n")


def main() -> None:
    unmet = unmet_requirements()
    if not unmet:
        return
    try:  # A1111 / Forge
        import launch  # type: ignore[import-not-found]
    except ImportError:
        sys.stderr.write(report(unmet))
        return
    for u in unmet:
        launch.run_pip(f'install "{u.requirement}"', f"{u.requirement} for LoRA Weights Builder")


if __name__ == "__main__":
    main()
