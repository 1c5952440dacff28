"""Import and export of profiles in five dialects: ``lbw``, ``inspire``, ``kohya`` (see :mod:`.positional`), and
our own ``json`` and ``csv``.

``json``: ``{"schema": 1, "profiles": [{"name", "layout", "weights": {block: value}, "description"}]}``.
``csv``: header ``name,layout,block,weight``, one row per block; with schedules a fifth column ``range`` (``0-40%``,
``5-20``) and one row per range of a block (an empty range: the whole run).

``dialect="auto"`` detects: ``{`` → json, ``[`` → kohya, the CSV header → csv, ``NAME:…`` lines → inspire when a
line is an ``@`` generator, has 21, 27 or 58 values or is a ``FLUX-DBL`` preset, else lbw.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence

from ..errors import ProfileError
from .model import Profile, family_layouts, fmt_weight, layout_of
from .positional import (
    Collector,
    ImportReport,
    export_inspire,
    export_kohya,
    export_lbw,
    import_inspire,
    import_kohya,
    import_lbw,
    shorten,
)
from .schedule import schedule_json

DIALECTS = ("lbw", "inspire", "kohya", "json", "csv")
JSON_SCHEMA = 1
CSV_HEADER = ["name", "layout", "block", "weight"]
CSV_HEADER_RANGES = [*CSV_HEADER, "range"]


def detect_dialect(text: str) -> tuple[str, str]:
    """``(dialect, why)`` for a text whose dialect was not given."""
    s = text.lstrip()
    if s.startswith("{"):
        return "json", "the text is a JSON object"
    if s.startswith("["):
        return "kohya", "the text is a JSON list"
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    if lines and [c.strip().lower() for c in lines[0].split(",")] in (CSV_HEADER, CSV_HEADER_RANGES):
        return "csv", "the first line is the CSV header name,layout,block,weight"
    for line in lines:
        if line.startswith("@"):
            return "inspire", "it has Inspire's @ generator lines"
        if ":" in line:
            name, _, values = line.partition(":")
            count = len(values.split(","))
            if count in (21, 27, 58) or (count == 20 and name.strip().upper().startswith("FLUX-DBL")):
                return "inspire", f"it has a {count}-value line, a length only Inspire uses"
    if any(":" in line for line in lines):
        return "lbw", "it has NAME:vector lines"
    raise ProfileError("cannot tell the dialect of this text (no NAME:vector lines, JSON or CSV header); give the "
                       f"dialect ({', '.join(DIALECTS)}).")


def _import_json(text: str, col: Collector) -> None:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ProfileError(f"the JSON does not parse ({exc}).") from None
    if isinstance(data, dict) and "profiles" in data:
        schema = data.get("schema", JSON_SCHEMA)
        if schema != JSON_SCHEMA:
            raise ProfileError(f"the JSON has schema {schema!r}; this lorawb reads schema {JSON_SCHEMA}. Upgrade "
                               "lorawb to import it.")
        entries = data["profiles"]
    elif isinstance(data, dict):
        entries = [data]
    else:
        entries = data
    if not isinstance(entries, list):
        raise ProfileError("the JSON 'profiles' must be a list of profile objects.")
    for entry in entries:
        item = json.dumps(entry, ensure_ascii=False)
        if not isinstance(entry, dict):
            col.skip(item, "not a profile object.")
            continue
        layout_id = entry.get("layout", entry.get("layout_id"))
        name, weights = entry.get("name"), entry.get("weights")
        if not isinstance(name, str) or not isinstance(layout_id, str) or not isinstance(weights, (dict, list)):
            col.skip(item, "a profile needs 'name', 'layout' and 'weights'.")
            continue
        if isinstance(weights, list):  # a vector in layout order
            try:
                ids = layout_of(layout_id).block_ids
            except ProfileError as exc:
                col.skip(item, str(exc))
                continue
            if len(weights) != len(ids):
                col.skip(item, f"{len(weights)} weights for layout {layout_id}, which has {len(ids)} blocks.")
                continue
            weights = dict(zip(ids, weights, strict=True))
        col.add(item, name, layout_id, weights, str(entry.get("description") or ""), entry.get("schedule"))


def _import_csv(text: str, col: Collector) -> None:
    rows = [r for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)]
    header = [c.strip().lower() for c in rows[0]] if rows else []
    if header not in (CSV_HEADER, CSV_HEADER_RANGES):
        raise ProfileError(f"a profiles CSV starts with the header {','.join(CSV_HEADER)} (or "
                           f"{','.join(CSV_HEADER_RANGES)} with ranges).")
    groups: dict[tuple[str, str], dict[str, float]] = {}
    schedules: dict[tuple[str, str], dict[str, list[str]]] = {}
    problems: dict[tuple[str, str], str] = {}
    for n, row in enumerate(rows[1:], 2):
        if len(row) != len(header):
            col.skip(",".join(row), f"row {n} has {len(row)} columns; it needs {','.join(header)}.")
            continue
        name, layout_id, block, weight, *rng = (c.strip() for c in row)
        key = (name, layout_id)
        weights = groups.setdefault(key, {})
        if key in problems:
            continue
        number = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
        ramp = bool(rng and rng[0]) and re.fullmatch(rf"{number}\s*~\s*{number}", weight)  # 0.2~1: a ramp
        if not ramp and not re.fullmatch(number, weight):
            problems[key] = f"row {n}: weight {weight!r} for block {block} is not a number."
        elif rng and rng[0]:
            schedules.setdefault(key, {}).setdefault(block, []).append(f"{weight}@{rng[0]}")
            weights.setdefault(block, float(weight.split("~")[0]))
        elif block in weights:
            problems[key] = f"row {n}: block {block} appears twice."
        else:
            weights[block] = float(weight)
    for (name, layout_id), weights in groups.items():
        item = f"{name},{layout_id}"
        if (name, layout_id) in problems:
            col.skip(item, problems[(name, layout_id)])
        else:
            col.add(item, name, layout_id, weights, schedule=schedules.get((name, layout_id)))


_IMPORTERS = {"lbw": import_lbw, "inspire": import_inspire, "kohya": import_kohya, "json": _import_json,
              "csv": _import_csv}


def import_profiles(text: str, *, dialect: str = "auto", family: str | None = None,
                    name_prefix: str = "") -> ImportReport:
    """Read profiles written in ``dialect`` (``"auto"`` detects it); each one validated, the rest skipped with
    the reason. ``family`` picks SD 2.x for 17/26-value vectors (SD 1.x without it); ``name_prefix`` is put
    before every name."""
    if not isinstance(text, str) or not text.strip():
        raise ProfileError("nothing to import: the text is empty.")
    if family is not None:
        family_layouts(family)
    notes = []
    if dialect == "auto":
        dialect, why = detect_dialect(text)
        notes.append(f"read as the {dialect} dialect: {why}.")
    elif dialect not in DIALECTS:
        raise ProfileError(f"unknown dialect {dialect!r}; use one of {', '.join(DIALECTS)} or auto.")
    col = Collector(dialect, family, name_prefix)
    col.report.notes.extend(notes)
    _IMPORTERS[dialect](text, col)
    return col.finish()


def _export_json(profiles: Sequence[Profile]) -> str:
    doc = {"schema": JSON_SCHEMA, "profiles": [
        {"name": p.name, "layout": p.layout_id, "weights": dict(p.weights), "description": p.description}
        | ({"schedule": schedule_json(p.schedule)} if p.schedule else {}) for p in profiles]}
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def _export_csv(profiles: Sequence[Profile]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    ranged = any(p.schedule for p in profiles)
    writer.writerow(CSV_HEADER_RANGES if ranged else CSV_HEADER)
    for p in profiles:
        for b, v in p.weights.items():
            pieces = p.schedule.get(b)
            if pieces:
                writer.writerows([p.name, p.layout_id, b, s.weight_text(), s.range_text()] for s in pieces)
            else:
                writer.writerow([p.name, p.layout_id, b, fmt_weight(v)] + ([""] if ranged else []))
    return buf.getvalue()


_EXPORTERS = {"lbw": export_lbw, "inspire": export_inspire, "kohya": export_kohya, "json": _export_json,
              "csv": _export_csv}


def export_profiles(profiles: Sequence[Profile], dialect: str) -> str:
    """``profiles`` as text in ``dialect``; a profile the dialect cannot express raises :class:`ProfileError`."""
    if dialect not in _EXPORTERS:
        raise ProfileError(f"unknown dialect {dialect!r}; export to one of {', '.join(DIALECTS)}.")
    bad = [p for p in profiles if not isinstance(p, Profile)]
    if bad:
        raise ProfileError(f"export takes Profile objects, not {shorten(repr(bad[0]), 40)}.")
    return _EXPORTERS[dialect](list(profiles))
