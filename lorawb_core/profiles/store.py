"""Profiles in the library database (the ``profiles`` table), next to the read-only built-ins.

Names are unique per layout, compared without case, and a library profile cannot take a built-in's name in its
layout. Every write runs in :func:`~lorawb_core.library.db.immediate`. Built-ins have no id and cannot be edited or
deleted: :func:`duplicate_profile` makes an editable copy.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sqlite_utils import Database
from sqlite_utils.db import NotFoundError

from ..errors import ProfileError, ProfileNotFound
from ..library.db import immediate, utcnow
from ..skipped import Skipped
from .model import Profile, check_name, layout_of, validate_weights
from .presets import builtin_profiles

TABLE = "profiles"
STORED_SOURCES = ("user", "imported")
_LIST_LIMIT = 30


def _from_row(row: Mapping) -> Profile:
    try:
        return Profile(name=row["name"], layout_id=row["layout_id"], weights=json.loads(row["weights"]),
                       source=row["source"] or "user", description=row.get("description") or "", id=row["id"],
                       created=row["created"], updated=row["updated"])
    except (ProfileError, ValueError, TypeError) as exc:
        raise ProfileError(f"profile id {row['id']} ({row['name']!r}) in the library cannot be read ({exc}); "
                           f"delete it with `lorawb profiles delete {row['id']}`.") from None


def _sorted(profiles: list[Profile]) -> list[Profile]:
    return sorted(profiles, key=lambda p: (p.name.casefold(), p.name, p.layout_id))


def list_profiles(db: Database, layout_id: str | None = None, *, builtins: bool = True) -> list[Profile]:
    """Built-ins first (registry order), then the library's profiles by name; of one layout or of all."""
    if layout_id is not None:
        layout_of(layout_id)
        rows = db[TABLE].rows_where("layout_id = ?", [layout_id])
    else:
        rows = db[TABLE].rows
    stored = _sorted([_from_row(r) for r in rows])
    return (builtin_profiles(layout_id) if builtins else []) + stored


def _names(profiles: Sequence[Profile]) -> str:
    names = list(dict.fromkeys(p.name for p in profiles))
    return ", ".join(names[:_LIST_LIMIT]) + (" …" if len(names) > _LIST_LIMIT else "")


def get_profile(db: Database, name: str, layout_id: str | None = None) -> Profile:
    """The built-in or library profile called ``name`` (of ``layout_id`` when given).

    A name found in several layouts without ``layout_id`` raises :class:`ProfileError` naming them; an unknown
    name raises :class:`ProfileNotFound` listing the names that exist.
    """
    name = name.strip() if isinstance(name, str) else name
    found = [p for p in builtin_profiles(layout_id) if p.name == name]
    where, args = ("name = ?", [name]) if layout_id is None else ("name = ? AND layout_id = ?", [name, layout_id])
    found += [_from_row(r) for r in db[TABLE].rows_where(where, args)]
    if len(found) == 1:
        return found[0]
    if found:
        raise ProfileError(f"a profile named {name!r} exists for several layouts "
                           f"({', '.join(p.layout_id for p in found)}); give the layout.")
    scope = f" for layout {layout_id}" if layout_id else ""
    existing = list_profiles(db, layout_id)
    near = [p.name for p in existing if isinstance(name, str) and p.name.casefold() == name.casefold()]
    hint = f" (did you mean {near[0]!r}? names are exact)" if near else ""
    raise ProfileNotFound(f"no profile named {name!r}{scope}{hint}; known{scope}: {_names(existing)}.")


def get_profile_by_id(db: Database, profile_id: int) -> Profile:
    """The library profile with this id, or :class:`ProfileNotFound`."""
    try:
        return _from_row(db[TABLE].get(profile_id))
    except NotFoundError:
        raise ProfileNotFound(f"no profile with id {profile_id} in the library; `lorawb profiles list` shows "
                              "the ids.") from None


def _own_id(profile: Profile | int) -> int:
    """The id of a library profile; built-ins (and profiles not stored) are refused with what to do."""
    if isinstance(profile, Profile):
        if profile.builtin:
            raise ProfileError(f"{profile.label} is a built-in profile and read-only; duplicate it first "
                               f"(`lorawb profiles duplicate {profile.name} NEW_NAME --layout {profile.layout_id}`) "
                               "and change the copy.")
        if profile.id is None:
            raise ProfileError(f"profile {profile.label} is not stored in the library; create it first.")
        return profile.id
    if isinstance(profile, bool) or not isinstance(profile, int):
        raise ProfileError(f"a profile id is an integer, not {profile!r}.")
    return profile


def _check_free(db: Database, name: str, layout_id: str, *, exclude: int | None = None) -> None:
    """Refuse a name a built-in or another library profile of the layout already has (case ignored)."""
    for p in builtin_profiles(layout_id):
        if p.name.casefold() == name.casefold():
            raise ProfileError(f"{p.name!r} is a built-in profile of layout {layout_id}; choose another name "
                               "(to change a built-in, duplicate it under a new name).")
    for row in db[TABLE].rows_where("layout_id = ? AND name = ? COLLATE NOCASE", [layout_id, name]):
        if row["id"] != exclude:
            raise ProfileError(f"a profile named {row['name']!r} already exists for layout {layout_id} (id "
                               f"{row['id']}); choose another name or edit that one.")


def _insert(db: Database, profile: Profile) -> int:
    now = utcnow()
    try:
        return db[TABLE].insert({"name": profile.name, "layout_id": profile.layout_id,
                                 "weights": json.dumps(profile.weights), "source": profile.source,
                                 "description": profile.description, "created": now, "updated": now}).last_pk
    except sqlite3.IntegrityError:  # a concurrent writer took the name between the check and the insert
        raise ProfileError(f"a profile named {profile.name!r} already exists for layout {profile.layout_id}; "
                           "choose another name.") from None


def create_profile(db: Database, name: str, layout_id: str, weights: Mapping[str, float], *, description: str = "",
                   source: str = "user") -> Profile:
    """Store a new profile (every block of the layout needs a weight) and return it with its id."""
    if source not in STORED_SOURCES:
        raise ProfileError(f"a stored profile's source is 'user' or 'imported', not {source!r}; built-ins come "
                           "with lorawb.")
    profile = Profile(name, layout_id, weights, source, description=description)
    with immediate(db):
        _check_free(db, profile.name, profile.layout_id)
        pk = _insert(db, profile)
    return get_profile_by_id(db, pk)


def update_profile(db: Database, profile_id: int | Profile, *, name: str | None = None,
                   weights: Mapping[str, float] | None = None, description: str | None = None) -> Profile:
    """Rename, re-weight (a full or partial map: blocks not named keep their value) or re-describe a library
    profile; ``updated`` moves to now."""
    pid = _own_id(profile_id)
    with immediate(db):
        current = get_profile_by_id(db, pid)
        new_name = check_name(name) if name is not None else current.name
        new_weights = current.weights if weights is None else \
            {**current.weights, **validate_weights(current.layout_id, weights, complete=False)}
        changed = Profile(new_name, current.layout_id, new_weights, current.source,
                          description=current.description if description is None else description)
        if new_name != current.name:
            _check_free(db, new_name, current.layout_id, exclude=pid)
        try:
            db[TABLE].update(pid, {"name": changed.name, "weights": json.dumps(changed.weights),
                                   "description": changed.description, "updated": utcnow()})
        except sqlite3.IntegrityError:
            raise ProfileError(f"a profile named {new_name!r} already exists for layout {current.layout_id}; "
                               "choose another name.") from None
    return get_profile_by_id(db, pid)


def duplicate_profile(db: Database, profile: Profile | int, new_name: str) -> Profile:
    """A new library profile with ``profile``'s layout, weights and description (built-ins too)."""
    source = get_profile_by_id(db, _own_id(profile)) if not isinstance(profile, Profile) else profile
    return create_profile(db, new_name, source.layout_id, source.weights, description=source.description)


def delete_profile(db: Database, profile_id: int | Profile) -> None:
    """Remove a library profile (built-ins cannot be deleted)."""
    pid = _own_id(profile_id)
    with immediate(db):
        get_profile_by_id(db, pid)
        db[TABLE].delete(pid)


@dataclass
class SaveReport:
    """Profiles stored by :func:`save_profiles`, and the ones refused with the reason."""

    created: list[Profile] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def save_profiles(db: Database, profiles: Sequence[Profile], *, dry_run: bool = False) -> SaveReport:
    """Store imported profiles in one transaction; a name already taken in its layout is skipped with the reason.
    With ``dry_run`` nothing is written (the report says what would be)."""
    report = SaveReport()
    taken: set[tuple[str, str]] = set()
    with immediate(db):
        for p in profiles:
            key = (p.layout_id, p.name.casefold())
            try:
                _check_free(db, p.name, p.layout_id)
                if key in taken:
                    raise ProfileError(f"a profile named {p.name!r} for {p.layout_id} came earlier in this import.")
            except ProfileError as exc:
                report.skipped.append(Skipped(p.label, str(exc)))
                continue
            taken.add(key)
            if dry_run:
                report.created.append(p)
            else:
                stored = Profile(p.name, p.layout_id, p.weights, p.source if p.source in STORED_SOURCES else "user",
                                 description=p.description)
                report.created.append(get_profile_by_id(db, _insert(db, stored)))
    return report
