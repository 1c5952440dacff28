"""Folder names from LoRA names: safe on Windows and Linux, unicode kept, collision-free (case-insensitively)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping

from ..errors import UsageError

TOKENS = ("family", "variant", "category", "slug", "stable_id")
MAX_SLUG = 80
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
_BAD = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f]+')


def slugify(name: str, fallback: str = "lora") -> str:
    """A folder name for ``name``: NFC, no characters Windows or Linux refuse, no reserved device names, no
    leading/trailing dots or spaces, spaces → ``_``, at most :data:`MAX_SLUG` characters."""
    text = unicodedata.normalize("NFC", name or "")
    text = _BAD.sub("_", text)
    text = re.sub(r"\s+", "_", text.strip())
    text = re.sub(r"_+", "_", text)[:MAX_SLUG].strip(" ._")
    if not text:
        text = fallback
    if text.split(".")[0].casefold() in _WINDOWS_RESERVED:
        text = f"{text}_"
    return text


def check_rule(rule: str) -> None:
    """A destination rule: ``/``-separated parts made of tokens and text; the last part names one LoRA's folder,
    so it must hold ``{slug}`` or ``{stable_id}``."""
    parts = [p for p in rule.replace("\\", "/").split("/") if p]
    if not parts:
        raise UsageError("organize.into is empty: use a rule such as '{slug}/' or '{family}/{slug}/'.")
    for name in re.findall(r"\{([^}]*)\}", rule):
        if name not in TOKENS:
            raise UsageError(f"organize.into: unknown token {{{name}}}; the tokens are "
                             + ", ".join(f"{{{t}}}" for t in TOKENS) + ".")
    if "{slug}" not in parts[-1] and "{stable_id}" not in parts[-1]:
        raise UsageError(f"organize.into {rule!r}: the last folder must hold {{slug}} or {{stable_id}} (each LoRA "
                         "gets its own folder with its config.yaml), e.g. '{family}/{slug}/'.")
    if any(p in (".", "..") for p in parts):
        raise UsageError(f"organize.into {rule!r}: '.' and '..' are not allowed (destinations stay in the root).")


def render_rule(rule: str, values: Mapping[str, str]) -> list[str]:
    """The folder parts of ``rule`` for one LoRA (each part made safe by :func:`slugify`)."""
    check_rule(rule)
    out = []
    for part in (p for p in rule.replace("\\", "/").split("/") if p):
        text = re.sub(r"\{(\w+)\}", lambda m: values.get(m[1]) or "unknown", part)
        out.append(slugify(text, fallback="unknown"))
    return out


def unique_name(name: str, taken: set[str]) -> str:
    """``name``, or ``name-2``, ``name-3``… the first whose casefold is not in ``taken`` (which it joins)."""
    candidate, n = name, 1
    while candidate.casefold() in taken:
        n += 1
        candidate = f"{name}-{n}"
    taken.add(candidate.casefold())
    return candidate
