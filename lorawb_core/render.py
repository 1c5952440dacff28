"""The block graph as a picture (for the LoRA Info node): one bar per block of the layout, grouped, labelled.

Drawn with Pillow, imported lazily (ComfyUI always ships it; nothing else in the core needs it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

GROUP_COLOURS = {"TE": (214, 160, 70), "IN": (86, 156, 214), "MID": (180, 120, 210), "OUT": (98, 190, 120),
                 "DOUBLE": (86, 156, 214), "SINGLE": (98, 190, 120), "JOINT": (86, 156, 214),
                 "BLOCKS": (86, 156, 214)}
BACKGROUND, FOREGROUND, MUTED = (30, 30, 34), (230, 230, 230), (120, 120, 128)


@dataclass
class Bar:
    id: str
    group: str
    value: float  # share of energy (0..1) or any non-negative figure
    exact: bool = True


def render_blocks(bars: Sequence[Bar], *, title: str, subtitle: str = "", width: int = 1024, height: int = 384,
                  pending: bool = False):
    """A PIL image. ``pending`` draws an empty, hatched graph that says the blocks are not measured yet."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    draw.text((12, 8), title, fill=FOREGROUND, font=font)
    if subtitle:
        draw.text((12, 24), subtitle, fill=MUTED, font=font)
    top, bottom, left, right = 48, height - 40, 12, width - 12
    n = max(len(bars), 1)
    slot = (right - left) / n
    peak = max((b.value for b in bars), default=0.0) or 1.0
    draw.line([(left, bottom), (right, bottom)], fill=MUTED)
    label_every = max(1, int(40 // max(slot, 1)) + (0 if slot >= 40 else 1))
    for i, bar in enumerate(bars):
        x0 = left + i * slot + max(1, slot * 0.12)
        x1 = left + (i + 1) * slot - max(1, slot * 0.12)
        if pending:
            for y in range(top, bottom, 8):
                draw.line([(x0, y), (x1, min(y + 6, bottom))], fill=(70, 70, 76))
        else:
            h = (bottom - top) * (bar.value / peak)
            colour = GROUP_COLOURS.get(bar.group, (160, 160, 160))
            draw.rectangle([x0, bottom - h, x1, bottom], fill=colour if bar.exact else None, outline=colour)
        if i % label_every == 0:
            draw.text((x0, bottom + 6 + (10 if (i // label_every) % 2 else 0)), bar.id, fill=FOREGROUND, font=font)
    if pending:
        draw.text((width // 2 - 120, (top + bottom) // 2), "blocks not measured yet (pending)", fill=FOREGROUND,
                  font=font)
    return img


def image_to_array(img):
    """HxWx3 float32 in 0..1 (what ComfyUI's IMAGE holds per batch item)."""
    import numpy as np

    return np.asarray(img, dtype=np.float32) / 255.0
