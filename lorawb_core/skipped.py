"""The one item-with-reason record of every report: what was left out and why.

A profile import lists the lines and entries it did not take, saving lists the profiles whose name was taken, a
scan lists the files it could not read: each as a :class:`Skipped` (the item as the reader knows it — the input
text, the profile's label, the file's path — and the reason, which says what to do).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Skipped:
    item: str
    reason: str
