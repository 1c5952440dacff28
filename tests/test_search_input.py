"""Arbitrary search input (control characters, NUL, quotes, FTS5 operators and column filters) through the search
route and ``lorawb search``: always an answer (200 with a list, or 400 naming the refused filter), never a 500."""

from __future__ import annotations

import contextlib
import io
import json
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from library_helpers import db_at, quick_scan, tiny_library

from lorawb_core.cli import main
from lorawb_core.errors import InvalidValue
from lorawb_core.library.search import FILTERS, fts_query, search
from lorawb_core.service import LibraryService

FTS_SYNTAX = ["AND", "OR", "NOT", "NEAR(", "NEAR(a b, 2)", ")", "(", "*", '"', '""', "^", "-", "+", ":", "name:",
              "file_name:", "{name tags}:", "facets:", "f_family:sdxl", "\x00", "%00", "'", ";", "--", "\\", "sd15",
              "sdxl", "flux"]
# free text: any characters (NUL and other controls included), mixed with FTS5 syntax and words the library holds
TEXT = st.lists(st.one_of(st.text(max_size=12), st.sampled_from(FTS_SYNTAX)), max_size=6).map(" ".join)
FILTER_VALUE = st.one_of(st.none(), st.sampled_from(["sdxl", "sd15", "flux", "kohya", "lora"]), st.text(max_size=10))
FILTERS_ST = st.fixed_dictionaries({name: FILTER_VALUE for name in FILTERS if name != "state"})
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def has_control(value: str | None) -> bool:
    return bool(value) and any(unicodedata.category(c) == "Cc" for c in value)


def refused_filter(filters: dict[str, str | None]) -> str | None:
    """The filter a search must refuse: the first (in FILTERS order) with a control character."""
    return next((name for name in FILTERS if has_control(filters.get(name))), None)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    base = tmp_path_factory.mktemp("search_input")
    tiny_library(base / "lib", per_folder=1)
    db = db_at(base / "library.sqlite3")
    try:
        quick_scan(db, [base / "lib"], structure_only=True)
    finally:
        db.close()
    return base


@pytest.fixture(scope="module")
def service(library):
    svc = LibraryService(library / "library.sqlite3", [str(library / "lib")],
                         scan_options={"workers": 0, "settle_window": 0.0})
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def db(library):
    db = db_at(library / "library.sqlite3")
    yield db
    db.close()


# ---- the core: what every caller shares -----------------------------------------------------------------------
@pytest.mark.parametrize("text", ["sd\x00xl", "\x00", "a\x00", "x\x01\x1f\x7fy", "\x85sd15"])
def test_control_characters_separate_words(db, text):
    spaced = "".join(" " if unicodedata.category(c) == "Cc" else c for c in text)
    assert fts_query(text) == fts_query(spaced)
    found = search(db, text=text, limit=500)
    expect = search(db, text=spaced, limit=500)
    assert [e.stable_id for e in found.items] == [e.stable_id for e in expect.items] and found.total == expect.total


def test_nul_in_a_word_matches_its_parts(db):
    assert search(db, text="sd\x00char").total == search(db, text="sd char").total > 0
    # an undecodable command-line byte (a lone surrogate, which SQLite cannot take) separates words too
    assert search(db, text="sd\udcffchar").total == search(db, text="sd char").total
    with pytest.raises(InvalidValue):
        search(db, family="sd\udcff")


@pytest.mark.parametrize("name", FILTERS)
def test_control_character_in_a_filter_is_refused_naming_it(db, name):
    with pytest.raises(InvalidValue) as err:
        search(db, text="sd", **{name: "sd\x00xl"})
    assert err.value.field == name and name in str(err.value)


@given(text=TEXT, filters=FILTERS_ST)
@settings(max_examples=150, deadline=None)
def test_search_never_fails_on_any_text(db, text, filters):
    refused = refused_filter(filters)
    if refused:
        with pytest.raises(InvalidValue) as err:
            search(db, text=text, **filters)
        assert err.value.field == refused
        return
    page = search(db, text=text, **filters)
    assert isinstance(page.items, list) and page.total >= len(page.items)
    # controls are separators: the same answer as with spaces in their place
    spaced = "".join(" " if unicodedata.category(c) == "Cc" else c for c in text)
    assert [e.row_id for e in search(db, text=spaced, **filters).items] == [e.row_id for e in page.items]


# ---- the route ------------------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_route_nul_in_q_answers(client):
    resp = await client.get("/lorawb/loras?q=sd%00xl&limit=5")
    assert resp.status == 200, await resp.text()
    assert isinstance((await resp.json())["items"], list)
    resp = await client.get("/lorawb/loras?family=sd%00xl")
    body = await resp.json()
    assert resp.status == 400 and body["error"]["field"] == "family" and body["error"]["type"] == "InvalidValue"


@pytest.mark.asyncio
@given(text=TEXT, filters=FILTERS_ST, sort=st.sampled_from([None, "relevance", "name", "added", "size", "strength"]))
@SETTINGS
async def test_route_answers_any_text(client, text, filters, sort):
    params = {"q": text, **{k: v for k, v in filters.items() if v is not None}}
    if sort:
        params["sort"] = sort
    resp = await client.get("/lorawb/loras", params=params)
    assert resp.status in (200, 400), (params, resp.status, await resp.text())
    body = await resp.json()
    sent = {k: v or None for k, v in filters.items()}  # an empty query value means "no filter"
    refused = refused_filter(sent)
    if refused:
        assert resp.status == 400 and body["error"]["field"] == refused, body
    elif resp.status == 400:  # only an over-long q is refused otherwise
        assert body["error"]["field"] == "q" and len(text) > 500, body
    else:
        assert isinstance(body["items"], list) and body["total"] >= len(body["items"])


# ---- the command line -----------------------------------------------------------------------------------------
def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


@given(text=TEXT, filters=FILTERS_ST)
@settings(max_examples=150, deadline=None)
def test_cli_search_answers_any_text(library, text, filters):
    options = [f"--{name}={value}" for name, value in filters.items() if value is not None]
    rc, out, err = run_cli(["search", "--db", str(library / "library.sqlite3"), "--json", *options, "--",
                            *text.split(" ")])
    refused = refused_filter(filters)
    if refused:
        assert rc == 1 and err.startswith("error: ") and f"The {refused} filter" in err and "Traceback" not in err
        return
    assert rc == 0, err
    data = json.loads(out)
    assert isinstance(data["items"], list) and data["total"] >= len(data["items"])
