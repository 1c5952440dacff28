"""Handlers of the profile and compose routes (bound by :mod:`.routes`).

Profiles: built-ins are listed with ``id: null`` and are read-only; library profiles are addressed by their integer
id. Weights travel as ``{block_id: number}`` (or a list in layout order). Export dialects: ``ours`` (``BLOCK=value``
assignments for every block: what the weights text box of the nodes reads) plus the core's ``lbw``, ``inspire``,
``kohya``, ``json`` and ``csv``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from aiohttp import web

from ..compose import DEFAULT_OPPOSING, DEFAULT_THRESHOLD, StackEntry, check_stack
from ..errors import LorawbError, ProfileError
from ..profiles import (
    DIALECTS,
    Profile,
    create_profile,
    delete_profile,
    duplicate_profile,
    export_profiles,
    get_profile_by_id,
    import_profiles,
    list_profiles,
    update_profile,
)
from ..profiles.model import check_name, layout_of, validate_weights
from ..profiles.schedule import block_text, validate_schedule
from ..profiles.store import save_profiles
from .http import BadRequest, Conflict, body_bool, body_str, json_response, q_bool, q_str, read_json

OURS = "ours"
MAX_STACK = 16
MAX_IMPORT_CHARS = 1_000_000


def ours_text(profile: Any) -> str:
    """A profile as ``BASE=1, IN00=0.5@0-40%, …``: every block named (with its ranges), readable by
    ``parse_weights``."""
    return ", ".join(block_text(b, v, profile.schedule) for b, v in profile.weights.items())


@contextmanager
def _profile_error(field: str) -> Iterator[None]:
    """A :class:`ProfileError` raised inside becomes a 400 naming ``field``."""
    try:
        yield
    except ProfileError as exc:
        raise BadRequest(str(exc), field=field) from None


def _weights(layout_id: str, raw: Any, *, complete: bool) -> dict[str, float]:
    """Body weights (a map or a list in layout order) checked against the layout; errors name ``weights``."""
    with _profile_error("weights"):
        if isinstance(raw, list):
            ids = layout_of(layout_id).block_ids
            if len(raw) != len(ids):
                raise BadRequest(f"{len(raw)} weights for layout {layout_id}, which has {len(ids)} blocks.",
                                 field="weights")
            raw = dict(zip(ids, raw, strict=True))
        if not isinstance(raw, Mapping):
            raise BadRequest("'weights' must map block ids to numbers (or list them in layout order).",
                             field="weights")
        return validate_weights(layout_id, raw, complete=complete)


def _schedule(layout_id: str, raw: Any) -> dict | None:
    """Body ranges ``{block: ["0.5@0-40%", …]}`` checked against the layout; errors name ``schedule``."""
    if raw is None:
        return None
    with _profile_error("schedule"):
        return dict(validate_schedule(layout_of(layout_id).block_ids, raw))


def _profile_id(request: web.Request) -> int:
    raw = request.match_info.get("profile_id", "")
    if not raw.isdigit() or len(raw) > 12:
        raise BadRequest(f"{raw[:40]!r} is not a profile id (a library profile's integer id; built-ins have none).",
                         field="profile_id")
    return int(raw)


def _layout_id(value: Any, field: str = "layout_id") -> str:
    if not isinstance(value, str) or not value:
        raise BadRequest(f"'{field}' is required (a layout id such as sdxl_unet_12).", field=field)
    with _profile_error(field):
        return layout_of(value).id


def _conflict_on_name(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except ProfileError as exc:
        raise Conflict(str(exc), field="name") from None


class ProfileRoutes:
    """Profiles: list, create (or duplicate), read, update, delete, import, export."""

    async def list_profiles(self, request: web.Request) -> dict[str, Any]:
        layout = q_str(request, "layout")
        if layout is not None:
            layout = _layout_id(layout, "layout")
        builtins = q_bool(request, "builtins", True)
        profiles = await self.run_db(list_profiles, layout, builtins=builtins)
        return {"profiles": [p.to_dict() for p in profiles], "dialects": [OURS, *DIALECTS]}

    async def get_profile(self, request: web.Request) -> dict[str, Any]:
        return (await self.run_db(get_profile_by_id, _profile_id(request))).to_dict()

    async def create_profile(self, request: web.Request) -> web.Response:
        body = await read_json(request, required=True)
        name = body_str(body, "name", required=True, max_len=200)
        with _profile_error("name"):
            name = check_name(name)
        description = body_str(body, "description", max_len=2000, default="")
        source = body.get("from_id")
        if source is not None:  # duplicate a library profile
            if isinstance(source, bool) or not isinstance(source, int):
                raise BadRequest("'from_id' must be a library profile's integer id.", field="from_id")

            def dup(db):
                return _conflict_on_name(duplicate_profile, db, get_profile_by_id(db, source), name)

            return json_response((await self.run_db(dup)).to_dict(), 201)
        layout_id = _layout_id(body.get("layout_id"))
        weights = _weights(layout_id, body.get("weights"), complete=True)
        schedule = _schedule(layout_id, body.get("schedule"))
        created = await self.run_db(lambda db: _conflict_on_name(create_profile, db, name, layout_id, weights,
                                                                 description=description, schedule=schedule))
        return json_response(created.to_dict(), 201)

    async def update_profile(self, request: web.Request) -> dict[str, Any]:
        pid = _profile_id(request)
        body = await read_json(request, required=True)
        name = body_str(body, "name", max_len=200)
        if name is not None:
            with _profile_error("name"):
                name = check_name(name)
        description = body_str(body, "description", max_len=2000)
        raw_weights = body.get("weights")

        def work(db):
            current = get_profile_by_id(db, pid)
            weights = None if raw_weights is None else _weights(current.layout_id, raw_weights, complete=False)
            schedule = _schedule(current.layout_id, body.get("schedule"))
            return _conflict_on_name(update_profile, db, pid, name=name, weights=weights, description=description,
                                     schedule=schedule)

        return (await self.run_db(work)).to_dict()

    async def delete_profile(self, request: web.Request) -> dict[str, Any]:
        pid = _profile_id(request)
        await self.run_db(delete_profile, pid)
        return {"deleted": pid}

    async def import_profiles(self, request: web.Request) -> dict[str, Any]:
        body = await read_json(request, required=True)
        text = body_str(body, "text", required=True, max_len=MAX_IMPORT_CHARS)
        dialect = body_str(body, "dialect", default="auto")
        if dialect not in ("auto", *DIALECTS):
            raise BadRequest(f"'dialect' must be auto or one of {', '.join(DIALECTS)}.", field="dialect")
        family = body_str(body, "family")
        prefix = body_str(body, "name_prefix", default="", max_len=50)
        save, dry_run = body_bool(body, "save", True), body_bool(body, "dry_run")
        with _profile_error("text"):
            report = import_profiles(text, dialect=dialect, family=family, name_prefix=prefix)
        skipped = [{"item": s.item, "reason": s.reason} for s in report.skipped]
        created = []
        if save and report.profiles:
            saved = await self.run_db(save_profiles, report.profiles, dry_run=dry_run)
            created = [p.to_dict() for p in saved.created]
            skipped += [{"item": s.item, "reason": s.reason} for s in saved.skipped]
        return {"dialect": report.dialect, "notes": report.notes, "profiles": [p.to_dict() for p in report.profiles],
                "created": created, "skipped": skipped, "saved": save and not dry_run}

    async def export_profiles(self, request: web.Request) -> dict[str, Any]:
        body = await read_json(request, required=True)
        dialect = body_str(body, "dialect", required=True)
        if dialect not in (OURS, *DIALECTS):
            raise BadRequest(f"'dialect' must be one of {OURS}, {', '.join(DIALECTS)}.", field="dialect")
        given, ids = body.get("profiles"), body.get("ids")
        layout = body.get("layout")
        profiles: list[Any] = []
        if given is not None:
            if not isinstance(given, list) or len(given) > 500:
                raise BadRequest("'profiles' must be a list of profile objects (at most 500).", field="profiles")
            for i, item in enumerate(given):
                with _profile_error(f"profiles[{i}]"):
                    if isinstance(item, Mapping) and isinstance(item.get("weights"), list):
                        item = {**item, "weights": _weights(_layout_id(item.get("layout_id")), item["weights"],
                                                            complete=True)}
                    profiles.append(Profile.from_dict({**item, "id": None, "source": "user"}))
        if ids is not None:
            if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
                raise BadRequest("'ids' must be a list of library profile ids.", field="ids")
            profiles += await self.run_db(lambda db: [get_profile_by_id(db, i) for i in ids])
        if given is None and ids is None:
            lay = _layout_id(layout, "layout") if layout is not None else None
            profiles = await self.run_db(list_profiles, lay, builtins=False)
        if dialect == OURS:
            text = "\n".join(ours_text(p) for p in profiles) + ("\n" if profiles else "")
        else:
            with _profile_error("dialect"):
                text = export_profiles(profiles, dialect)
        return {"dialect": dialect, "count": len(profiles), "text": text}


def body_entries(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The body's ``entries`` (a stack) checked for shape; errors name the entry."""
    entries = body.get("entries")
    if not isinstance(entries, list) or not entries:
        raise BadRequest("'entries' must be a non-empty list of {lora, strength_model?, strength_clip?, "
                         "profile?, weights?} objects.", field="entries")
    if len(entries) > MAX_STACK:
        raise BadRequest(f"a stack holds at most {MAX_STACK} LoRAs.", field="entries")
    for i, e in enumerate(entries):
        if not isinstance(e, Mapping) or not isinstance(e.get("lora"), str) or not e["lora"].strip():
            raise BadRequest(f"entry {i + 1} needs a 'lora' (a stable ID like SD1-CHR-001).",
                             field=f"entries[{i}].lora")
    return entries


def stack_entries(db, entries: list[Mapping[str, Any]]) -> list[StackEntry]:
    """JSON entries as :class:`StackEntry` (profiles resolved through ``db``); errors name the entry."""
    items = []
    for i, e in enumerate(entries):
        try:
            items.append(StackEntry.from_dict(e, db))
        except LorawbError as exc:
            field = f"entries[{i}].profile" if type(exc).__name__ == "ProfileNotFound" else f"entries[{i}]"
            raise BadRequest(f"entry {i + 1}: {exc}", field=field) from None
    return items


class ComposeRoutes:
    """The compose gate: verdict, reasons, warnings and the combined per-block graph of a stack."""

    async def compose_check(self, request: web.Request) -> dict[str, Any]:
        body = await read_json(request, required=True)
        entries = body_entries(body)
        family = body_str(body, "model_family")
        has_clip = body_bool(body, "has_clip", True)
        directions = body_bool(body, "directions", True)
        threshold = body.get("threshold", DEFAULT_THRESHOLD)
        opposing = body.get("opposing", DEFAULT_OPPOSING)
        for name, value in (("threshold", threshold), ("opposing", opposing)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise BadRequest(f"'{name}' must be a number.", field=name)

        def work(db):
            return check_stack(db, stack_entries(db, entries), model_family=family, has_clip=has_clip, threshold=float(threshold),
                               opposing=float(opposing), directions=directions).to_dict()

        return await self.run_db(work)
