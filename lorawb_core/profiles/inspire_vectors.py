"""Inspire Pack's positional vectors that have no LBW counterpart: the SD/SDXL LyCORIS forms (27/28, 21/22 values:
BASE, (IN00,) IN01…, middle_block 0/1/2, OUT00…) and the Flux forms (58 = BASE, D00–D18, S00–S37; 20 = BASE +
D00–D18). Read here once, for ``lorawb profiles import --dialect inspire`` and for a vector typed as weights."""

from __future__ import annotations

from ..errors import ProfileError
from ..layouts import get_layout
from .model import fmt_weight


def _lyco(values: list[float], layout_id: str) -> tuple[dict[str, float] | None, str]:
    """Inspire's LyCORIS vector (BASE, (IN00,) IN01…, MID×3, OUT00…) as our full layout, or ``None`` and the reason.

    The count tells whether IN00 (conv_in) has a position: the layout's blocks + 2 (three middle values for M00)
    with it, + 1 without (then IN00 = 0)."""
    ids = get_layout(layout_id).block_ids
    ins = [b for b in ids if b.startswith("IN")]
    if len(values) == len(ids) + 1:
        ins = ins[1:]
    n_in = len(ins)
    mids = values[1 + n_in:4 + n_in]
    if len(set(mids)) > 1:
        shown = ", ".join(fmt_weight(v) for v in mids)
        return None, (f"middle_block 0/1/2 have different values ({shown}); lorawb has one middle block M00, so "
                      "it cannot keep them apart.")
    outs = [b for b in ids if b.startswith("OUT")]
    weights = {"BASE": values[0], "IN00": 0.0, **dict(zip(ins, values[1:1 + n_in], strict=True)), "M00": mids[0],
               **dict(zip(outs, values[4 + n_in:], strict=True))}
    return weights, ""


_INSPIRE_LYCO = {27: "sd15_unet_26", 28: "sd15_unet_26", 21: "sdxl_unet_20", 22: "sdxl_unet_20"}
_INSPIRE_NOTES = {
    27: "IN00 (conv_in) has no position in Inspire's 27/21-value LyCORIS vectors; it was set to 0.",
    28: "Inspire's 28/22-value LyCORIS vectors are BASE, IN00…, middle_block 0/1/2 (one value: M00), OUT00….",
    58: "Inspire's Flux BASE position also covers the text encoders and every unmatched key (img_in, txt_in, "
        "final_layer …): CLIP, T5, IN and OUT took the BASE value.",
    20: "A 20-value Flux vector covers BASE and D00–D18; the single blocks S00–S37 took the last value (D18's), as "
        "Inspire does.",
}
_INSPIRE_NOTES[21], _INSPIRE_NOTES[22] = _INSPIRE_NOTES[27], _INSPIRE_NOTES[28]


def inspire_weights(values: list[float], family: str | None) -> tuple[str, dict[str, float], list[str]] | None:
    """An Inspire Pack LyCORIS (21/22/27/28) or Flux (58, 20) vector as ``(layout id, weights, notes)``; ``None`` when
    ``values`` is none of those forms for ``family`` (any family when ``None``). Raises :class:`ProfileError` when
    the form is known but cannot be kept (three different middle values)."""
    n = len(values)
    if n in _INSPIRE_LYCO:
        layout_id = _INSPIRE_LYCO[n]
        fam = get_layout(layout_id).family
        if family == "sd2" and fam == "sd15":
            layout_id, fam = layout_id.replace("sd15_", "sd2_", 1), "sd2"
        if family not in (None, fam):
            return None
        weights, reason = _lyco(values, layout_id)
        if weights is None:
            raise ProfileError(f"Inspire's {n}-value LyCORIS vector: {reason} Give the three middle values alike.")
        return layout_id, weights, [_INSPIRE_NOTES[n]]
    if n in (58, 20) and family in (None, "flux"):
        notes = [_INSPIRE_NOTES[58]] + ([_INSPIRE_NOTES[20]] if n == 20 else [])
        return "flux_dit_61", _inspire_flux(values), notes
    return None


def _inspire_flux(values: list[float]) -> dict[str, float]:
    doubles = values[1:20]
    singles = values[20:] if len(values) == 58 else [values[19]] * 38
    ids = get_layout("flux_dit_61").block_ids
    weights = dict.fromkeys(("CLIP", "T5", "IN", "OUT"), values[0])
    weights.update(zip([b for b in ids if b.startswith("D")], doubles, strict=True))
    weights.update(zip([b for b in ids if b.startswith("S")], singles, strict=True))
    return weights
