"""Job specs → :class:`~lorawb_core.batch.work.BatchPlan`: previews, A/B tests, XY grids, block ablation.

Planners read the library and the preview settings and never talk to a server (check the plan's workflows with
:mod:`.server_check` before queueing). Each returns a :class:`Planned`: the plan and the LoRAs left out with the
reason (also in ``plan.spec["skipped"]``), so one missing LoRA never stops a batch.

A stack is given as the CLI takes it, ``ID_OR_PATH[:STRENGTH][@WEIGHTS]`` per LoRA (:class:`~lorawb_core.merge.plan.
MergeInput` syntax). An axis is ``NAME=v1,v2,…`` with NAME one of :data:`AXES`:

``strength``  every LoRA of the stack at its own strength × v (``0`` = the image without the LoRA's effect)
``profile``   block weights for every LoRA: a preset (``ALL``, ``INS``, ``OUTD`` …), a saved profile, any dialect
``block``     the stack with one block muted (``BLOCK=0``, every other block 1), per block id
``seed``      the sampler seed
``lora``      the stack's first LoRA replaced by each of these (IDs or paths)
``checkpoint`` the checkpoint (as the server names it)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from sqlite_utils import Database

from ..errors import LorawbError, UsageError
from ..merge.plan import MergeInput
from ..skipped import Skipped
from . import targets as tg
from .settings import PreviewConfig, PreviewSettings, fill_prompt
from .templates import LoraUse, Template, UserTemplate, template_for
from .work import BatchPlan, WorkItem

AXES = ("strength", "profile", "block", "seed", "lora", "checkpoint")
XY_LIMIT = 64
ABLATION_MODES = ("mute", "solo")
REFERENCE = "ALL"  # the ablation cell with every block on


@dataclass
class Planned:
    plan: BatchPlan
    skipped: list[Skipped] = field(default_factory=list)


@dataclass(frozen=True)
class Axis:
    name: str
    values: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Axis:
        name, eq, values = (text or "").partition("=")
        name = name.strip().lower()
        if not eq or name not in AXES:
            raise UsageError(f"axis {text!r}: write NAME=v1,v2,… with NAME one of {', '.join(AXES)} "
                             "(e.g. strength=0,0.5,1).")
        items = tuple(v.strip() for v in values.split(",") if v.strip())
        if not items:
            raise UsageError(f"axis {text!r} has no values.")
        if name in ("strength", "seed"):
            for v in items:
                try:
                    float(v) if name == "strength" else int(v)
                except ValueError:
                    raise UsageError(f"axis {name}: {v!r} is not a {'number' if name == 'strength' else 'whole number'}"
                                     ".") from None
        return cls(name, items)

    def to_dict(self) -> dict[str, Any]:
        return {"axis": self.name, "values": list(self.values)}


@dataclass(frozen=True)
class _Cell:
    """What a cell of a grid/A-B/ablation changes: the stack, the settings."""

    uses: tuple[LoraUse, ...]
    settings: PreviewSettings
    targets: tuple[tg.Target, ...]


def _skipped_json(skipped: list[Skipped]) -> list[dict[str, str]]:
    return [asdict(s) for s in skipped]


def _check_weights(db: Database, target: tg.Target, text: str) -> None:
    """Refuse block-weight text the node would refuse, before anything is queued."""
    from ..profiles import list_profiles, parse_weights

    if not target.full_layout_id:
        raise UsageError(f"{target.stable_id}: its family ({target.family or 'unknown'}) has no block layout, so block "
                         "weights cannot be applied to it.")
    parse_weights(text, family=target.family, layout_id=target.layout_id,
                  known=lambda: list_profiles(db, builtins=False), convert=False)


def _prompts(settings: PreviewSettings, target: tg.Target) -> tuple[str, str]:
    return (fill_prompt(settings.prompt, name=target.name, triggers=list(target.trigger_words)),
            fill_prompt(settings.negative, name=target.name, triggers=list(target.trigger_words)))


def _item(template: Template, key: str, cell: _Cell, label: str, params: dict[str, Any]) -> WorkItem:
    prompt, negative = _prompts(cell.settings, cell.targets[0])
    built = template.render(cell.settings, list(cell.uses), prompt, negative)
    loras = [{"stable_id": u.stable_id, "strength_model": u.strength_model, "strength_clip": u.clip_strength,
              "weights": u.weights} for u in cell.uses]
    params = {**params, "loras": loras, "seed": cell.settings.seed, "prompt": prompt, "negative": negative,
              "checkpoint": cell.settings.checkpoint or None, "width": cell.settings.width,
              "height": cell.settings.height, "steps": cell.settings.steps, "cfg": cell.settings.cfg}
    return WorkItem(key=key, workflow=built.workflow, output_node=built.output_node, group=built.group, label=label,
                    params=params)


# ---- previews -------------------------------------------------------------------------------------------------
def plan_previews(db: Database, refs: list[str] = (), *, missing: bool = False, filter_text: str = "",
                  config: PreviewConfig | None = None, overrides: dict[str, Any] | None = None,
                  template: UserTemplate | None = None, force: bool = False) -> Planned:
    """One preview per LoRA: the ``refs`` given, else every LoRA matching ``filter_text`` (``missing``: only those
    without a preview). A LoRA that already has a preview is skipped unless ``force``."""
    config = config or PreviewConfig()
    if refs:
        found, skipped = tg.resolve_many(db, list(refs))
    elif missing or filter_text:
        found, skipped = tg.matching(db, filter_text, missing_preview=missing)
    else:
        raise UsageError("say which LoRAs to preview: IDs or paths, --missing (every LoRA without a preview) or "
                         "--filter TEXT.")
    items = []
    for t in found:
        if t.preview and not force:
            skipped.append(Skipped(t.stable_id, f"{t.stable_id} already has a preview ({t.preview}); use --force to "
                                                "replace it."))
            continue
        try:
            settings = config.settings_for(t.family, overrides)
            cell = _Cell((LoraUse(t.stable_id, settings.strength),), settings, (t,))
            items.append(_item(template_for(t.family, template), t.stable_id, cell, f"{t.stable_id} · {t.name}",
                               {"stable_id": t.stable_id, "name": t.name, "path": t.path, "sidecar": t.sidecar,
                                "family": t.family}))
        except LorawbError as exc:
            skipped.append(Skipped(t.stable_id, str(exc)))
    spec = {"kind": "preview", "ids": list(refs), "missing": missing, "filter": filter_text, "force": force,
            "overrides": dict(overrides or {}), "skipped": _skipped_json(skipped)}
    title = f"Previews of {len(items)} LoRA{'s' if len(items) != 1 else ''}"
    return Planned(BatchPlan("preview", title, spec, tuple(items)), skipped)


# ---- stacks, A/B and XY -----------------------------------------------------------------------------------------
def _stack(db: Database, specs: list[str]) -> tuple[list[LoraUse], list[tg.Target]]:
    if not specs:
        raise UsageError("give at least one LoRA (ID_OR_PATH[:STRENGTH][@WEIGHTS]).")
    uses, found = [], []
    for spec in specs:
        item = MergeInput.parse(spec)
        target = tg.resolve(db, item.lora)
        if item.weights:
            _check_weights(db, target, item.weights)
        uses.append(LoraUse(target.stable_id, item.strength_model, item.strength_clip, item.weights))
        found.append(target)
    families = {t.family for t in found}
    if len(families) > 1:
        raise UsageError(f"the stack mixes base model families ({', '.join(sorted(map(str, families)))}); one image "
                         "needs LoRAs of one family.")
    return uses, found


def _apply(db: Database, cell: _Cell, axis: str, value: str) -> _Cell:
    """The cell with one axis value applied."""
    uses, settings, found = list(cell.uses), cell.settings, list(cell.targets)
    if axis == "strength":
        f = float(value)
        uses = [replace(u, strength_model=u.strength_model * f, strength_clip=u.clip_strength * f) for u in uses]
    elif axis in ("profile", "block"):
        text = value if axis == "profile" else f"default=1, {value}=0"
        for t in found:
            _check_weights(db, t, text)
        uses = [replace(u, weights=text) for u in uses]
    elif axis == "seed":
        settings = replace(settings, seed=int(value))
    elif axis == "checkpoint":
        settings = replace(settings, checkpoint=value)
    elif axis == "lora":
        t = tg.resolve(db, value)
        if t.family != found[0].family:
            raise UsageError(f"axis lora: {t.stable_id} is a {t.family} LoRA, the stack is {found[0].family}.")
        uses[0] = replace(uses[0], stable_id=t.stable_id)
        found[0] = t
    return _Cell(tuple(uses), settings, tuple(found))


def _base(db: Database, specs: list[str], config: PreviewConfig | None, overrides: dict[str, Any] | None,
          template: UserTemplate | None) -> tuple[_Cell, Template]:
    uses, found = _stack(db, specs)
    settings = (config or PreviewConfig()).settings_for(found[0].family, overrides)
    return _Cell(tuple(uses), settings, tuple(found)), template_for(found[0].family, template)


def _label(axis: Axis, value: str) -> str:
    return {"strength": f"s={value}", "seed": f"seed {value}"}.get(axis.name, value)


def plan_xy(db: Database, specs: list[str], x: Axis, y: Axis | None = None, *, config: PreviewConfig | None = None,
            overrides: dict[str, Any] | None = None, template: UserTemplate | None = None, limit: int = XY_LIMIT,
            confirm: bool = False, kind: str = "xy") -> Planned:
    """One cell per (x, y) value pair, row by row; over ``limit`` cells is refused unless ``confirm``."""
    if y is not None and y.name == x.name:
        raise UsageError(f"the x and y axes are both {x.name}; give two different axes.")
    cells = len(x.values) * (len(y.values) if y else 1)
    if cells > limit and not confirm:
        raise UsageError(f"this grid has {cells} cells, over the limit of {limit}; use fewer values or confirm it "
                         "(--yes).")
    base, template_ = _base(db, specs, config, overrides, template)
    items, skipped = [], []
    for yv in (y.values if y else ("",)):
        for xv in x.values:
            key = f"x={xv}" + (f"|y={yv}" if y else "")
            try:
                cell = _apply(db, base, x.name, xv)
                if y:
                    cell = _apply(db, cell, y.name, yv)
                label = _label(x, xv) + (f" · {_label(y, yv)}" if y else "")
                items.append(_item(template_, key, cell, label, {"x": xv, "y": yv if y else None}))
            except LorawbError as exc:
                skipped.append(Skipped(key, str(exc)))
    spec = {"kind": kind, "stack": list(specs), "x": x.to_dict(), "y": y.to_dict() if y else None,
            "overrides": dict(overrides or {}), "skipped": _skipped_json(skipped)}
    names = ", ".join(u.stable_id for u in base.uses)
    title = f"{names}: {x.name}" + (f" by {y.name}" if y else "")
    return Planned(BatchPlan(kind, title, spec, tuple(items)), skipped)  # type: ignore[arg-type]


def plan_ab(db: Database, specs: list[str], *, strengths: list[str] = (), profiles: list[str] = (),
            **kwargs: Any) -> Planned:
    """The stack side by side at N strengths (each LoRA's own strength × s) or under N profiles: one row."""
    if bool(strengths) == bool(profiles):
        raise UsageError("an A/B test varies one thing: give --strengths 0.4,0.8,1.2 or --profiles ALL,OUTD.")
    axis = Axis.parse("strength=" + ",".join(strengths) if strengths else "profile=" + ",".join(profiles))
    return plan_xy(db, specs, axis, None, kind="ab", **kwargs)


def ablation_blocks(db: Database, target: tg.Target) -> list[str]:
    """The blocks worth ablating: those of the LoRA's layout it has weight in (all of them before it is measured)."""
    from ..layouts import get_layout

    if not target.layout_id:
        raise UsageError(f"{target.stable_id}: its family ({target.family or 'unknown'}) has no block layout to "
                         "ablate.")
    ids = get_layout(target.layout_id).block_ids
    rows = db.execute("SELECT block_id, norm FROM blocks WHERE lora_id = (SELECT id FROM loras WHERE stable_id = ?)",
                      [target.stable_id]).fetchall()
    norms = {b: n for b, n in rows}
    return [b for b in ids if norms.get(b, 1.0)] if norms else ids


def plan_ablation(db: Database, specs: list[str], *, mode: str = "mute", config: PreviewConfig | None = None,
                  overrides: dict[str, Any] | None = None, template: UserTemplate | None = None,
                  limit: int = XY_LIMIT, confirm: bool = False) -> Planned:
    """LBW's effective-block analysis: the all-blocks image, then one image per block muted (``mute``: the block at
    0, the others at 1) or alone (``solo``: only that block at 1, REST at 0). The stack's first LoRA gives the
    blocks; every LoRA gets the same weights."""
    if mode not in ABLATION_MODES:
        raise UsageError(f"ablation mode {mode!r}: use mute or solo.")
    base, template_ = _base(db, specs, config, overrides, template)
    blocks = ablation_blocks(db, base.targets[0])
    if len(blocks) + 1 > limit and not confirm:
        raise UsageError(f"ablating {len(blocks)} blocks makes {len(blocks) + 1} images, over the limit of {limit}; "
                         "confirm it (--yes).")
    items, skipped = [], []
    for block in [REFERENCE, *blocks]:
        if block == REFERENCE:
            text = "default=1"
        else:
            text = f"default=1, {block}=0" if mode == "mute" else f"default=0, REST=0, {block}=1"
        cell = _Cell(tuple(replace(u, weights=text) for u in base.uses), base.settings, base.targets)
        try:
            items.append(_item(template_, block, cell, block if block == REFERENCE else f"{mode} {block}",
                               {"x": block, "block": None if block == REFERENCE else block, "mode": mode}))
        except LorawbError as exc:
            skipped.append(Skipped(block, str(exc)))
    spec = {"kind": "ablation", "stack": list(specs), "mode": mode, "blocks": blocks,
            "x": {"axis": "block", "values": [REFERENCE, *blocks]}, "y": None,
            "overrides": dict(overrides or {}), "skipped": _skipped_json(skipped)}
    title = f"{base.uses[0].stable_id}: block ablation ({mode})"
    return Planned(BatchPlan("ablation", title, spec, tuple(items)), skipped)
