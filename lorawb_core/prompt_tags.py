"""The ``<lorawb:…>`` prompt tag of the A1111/Forge extension and the ``lorawb:`` infotext line, host-free.

Tag (A1111 splits the text between ``<lorawb:`` and ``>`` on ``:`` and hands over the pieces)::

    <lorawb:ID_OR_NAME[:STRENGTH[:WEIGHTS]][:te=X][:unet=X][:lbw=WEIGHTS][:start=N][:stop=N][:step=A-B]>

* ``ID_OR_NAME``: a stable ID (``SD1-CHR-001``) or the library name of a LoRA.
* ``STRENGTH``: the strength of the whole LoRA (default 1); ``te=`` sets the text encoder's apart, ``unet=`` the
  UNet's (LBW's meaning: both default to ``STRENGTH``).
* ``WEIGHTS`` (or LBW's ``lbw=``/``w=``): block weights in any form :func:`lorawb_core.profiles.parse_weights`
  reads — a preset (``OUTD``), an LBW vector (``1,0,0,…``), ``BLOCK=value`` assignments, a profile name.
* ``start=``/``stop=`` (or ``step=A-B``): LBW's active steps of the whole LoRA (sampler steps).

Infotext (what was applied, one entry per tag, ``, `` between entries)::

    lorawb: SD1-CHR-001:0.8@OUTD, SDX-STY-002:1:te=0.5@(1,0,0,1)

An entry is ``REF:STRENGTH[:te=X][:unet=X][:start=N][:stop=N][@WEIGHTS]``; weights with a comma are put in
parentheses. :func:`parse_infotext` reads it back and :meth:`LorawbTag.prompt_text` rebuilds each tag.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import UsageError

TAG_NAME = "lorawb"
INFOTEXT_KEY = "lorawb"
_NAMED = ("te", "unet", "lbw", "w", "start", "stop", "step")
_NOT_HERE = {
    "lbwe": "LBW's elemental weights (lbwe=) are not read; give block weights instead (IN04=0.5, a preset, a vector)",
    "dyn": "dyn= (A1111's rank trimming) is not applied by lorawb; use <lora:…:dyn=N> for that",
}
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_STEPS = re.compile(r"\d+")


class TagError(UsageError):
    """A ``<lorawb:…>`` tag or ``lorawb:`` infotext entry that cannot be read; the message quotes it."""


@dataclass(frozen=True)
class LorawbTag:
    """One ``<lorawb:…>`` tag, read but not resolved (the library says what ``ref`` is)."""

    ref: str
    strength: float = 1.0
    te: float | None = None  # None: ``strength``
    unet: float | None = None  # None: ``strength``
    weights: str | None = None  # block weights as typed (None: every block 1)
    start: int | None = None
    stop: int | None = None

    @property
    def te_strength(self) -> float:
        return self.strength if self.te is None else self.te

    @property
    def unet_strength(self) -> float:
        return self.strength if self.unet is None else self.unet

    def weights_text(self) -> str | None:
        """The weights with LBW's ``start=``/``stop=`` appended, as :func:`parse_weights` reads them."""
        if self.start is None and self.stop is None:
            return self.weights
        span = " ".join(f"{k}={v}" for k, v in (("start", self.start), ("stop", self.stop)) if v is not None)
        return f"{self.weights or 'ALL'} {span}"

    def _options(self) -> list[str]:
        return [f"{k}={_num(v)}" for k, v in (("te", self.te), ("unet", self.unet)) if v is not None] + \
               [f"{k}={v}" for k, v in (("start", self.start), ("stop", self.stop)) if v is not None]

    def prompt_text(self) -> str:
        """The tag that reads back to this one (``<lorawb:SD1-CHR-001:0.8:OUTD>``)."""
        parts = [self.ref, _num(self.strength)] + ([self.weights] if self.weights else []) + self._options()
        return f"<{TAG_NAME}:{':'.join(parts)}>"

    def infotext_entry(self, ref: str | None = None) -> str:
        """This tag in the infotext form (``ref`` replaces the typed reference, e.g. by the stable ID)."""
        text = ":".join([ref or self.ref, _num(self.strength), *self._options()])
        if self.weights:
            text += "@" + (f"({self.weights})" if "," in self.weights or " " in self.weights else self.weights)
        return text


def _num(value: float) -> str:
    return f"{value:g}"


def _number(text: str, what: str, tag: str) -> float:
    text = text.strip()
    if not _NUMBER.fullmatch(text) or not math.isfinite(float(text)):
        raise TagError(f"{tag}: {what} {text!r} is not a number; write e.g. 0.8.")
    return float(text)


def _steps(text: str, what: str, tag: str) -> int:
    if not _STEPS.fullmatch(text.strip()):
        raise TagError(f"{tag}: {what}={text!r}: LBW counts sampler steps, so give a whole number (e.g. {what}=10).")
    return int(text)


def parse_tag(items: Sequence[str]) -> LorawbTag:
    """A tag from A1111's pieces (``ExtraNetworkParams.items``: the text between ``<lorawb:`` and ``>`` split on
    ``:``). Named pieces are only the ones this tag knows (``te unet lbw w start stop step``), so ``BLOCK=value``
    weights stay weights."""
    pieces = [str(p).strip() for p in items]
    shown = f"<{TAG_NAME}:{':'.join(pieces)}>"
    if not pieces or not pieces[0]:
        raise TagError(f"{shown}: the tag needs a LoRA, like <{TAG_NAME}:SD1-CHR-001:0.8>.")
    positional: list[str] = []
    named: dict[str, str] = {}
    for piece in pieces[1:]:
        key, eq, value = piece.partition("=")
        if eq and key.strip().lower() in _NOT_HERE:
            raise TagError(f"{shown}: {_NOT_HERE[key.strip().lower()]}.")
        if eq and key.strip().lower() in _NAMED:
            key = key.strip().lower()
            key = "lbw" if key == "w" else key
            if key in named:
                raise TagError(f"{shown}: {key}= is given twice; give it once.")
            named[key] = value.strip()
        else:
            positional.append(piece)
    if len(positional) > 2:
        raise TagError(f"{shown}: too many parts; the tag is <{TAG_NAME}:LORA:STRENGTH:WEIGHTS> plus te=, unet=, "
                       "lbw=, start=, stop= (a weights text cannot contain ':').")
    strength = _number(positional[0], "strength", shown) if positional else 1.0
    weights = positional[1] if len(positional) > 1 else None
    if "lbw" in named:
        if weights is not None:
            raise TagError(f"{shown}: the weights are given twice (third part and lbw=); give them once.")
        weights = named["lbw"]
    if weights is not None and not weights.strip():
        raise TagError(f"{shown}: the weights part is empty; leave it out for all blocks at 1.")
    start = _steps(named["start"], "start", shown) if "start" in named else None
    stop = _steps(named["stop"], "stop", shown) if "stop" in named else None
    if "step" in named:
        if start is not None or stop is not None:
            raise TagError(f"{shown}: step=A-B and start=/stop= both give the active steps; give one of them.")
        a, dash, b = named["step"].partition("-")
        if not dash:
            raise TagError(f"{shown}: step={named['step']}: LBW writes step=START-END (e.g. step=5-20).")
        start, stop = _steps(a, "step", shown), _steps(b, "step", shown)
    if start is not None and stop is not None and stop <= start:
        raise TagError(f"{shown}: stop={stop} is not after start={start}; the LoRA would never be active.")
    te = _number(named["te"], "te", shown) if "te" in named else None
    unet = _number(named["unet"], "unet", shown) if "unet" in named else None
    return LorawbTag(pieces[0], strength, te, unet, weights.strip() if weights else None, start, stop)


def format_infotext(entries: Sequence[str]) -> str:
    """The ``lorawb`` infotext value from :meth:`LorawbTag.infotext_entry` strings."""
    return ", ".join(entries)


def _split_entries(text: str) -> list[str]:
    out, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur).strip())
    return [e for e in out if e]


def parse_infotext(text: str) -> list[LorawbTag]:
    """The tags an infotext ``lorawb`` value records (the inverse of :func:`format_infotext`)."""
    tags = []
    for entry in _split_entries(str(text or "")):
        head, at, weights = entry.partition("@")
        weights = weights.strip()
        if weights.startswith("(") and weights.endswith(")"):
            weights = weights[1:-1]
        if at and not weights:
            raise TagError(f"lorawb infotext entry {entry!r}: nothing after '@'; write REF:STRENGTH@WEIGHTS.")
        tags.append(parse_tag(head.split(":") + ([f"lbw={weights}"] if at else [])))
    return tags
