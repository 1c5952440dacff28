"""Profiles in the library database: CRUD, name rules, read-only built-ins, saving imports, parse with a db."""

from __future__ import annotations

import json

import pytest

from lorawb_core.errors import LorawbError, ProfileError, ProfileNotFound
from lorawb_core.layouts import get_layout
from lorawb_core.library.db import open_library
from lorawb_core.library.migrations import MIGRATION_NAMES
from lorawb_core.profiles import (
    builtin_profiles,
    create_profile,
    delete_profile,
    duplicate_profile,
    get_profile,
    get_profile_by_id,
    import_profiles,
    list_profiles,
    parse_weights,
    update_profile,
)
from lorawb_core.profiles import store as store_module
from lorawb_core.profiles.store import save_profiles

SD17 = get_layout("sd15_unet_17").block_ids


@pytest.fixture
def db(tmp_path):
    d = open_library(tmp_path / "library.sqlite3")
    yield d
    d.close()


def half(layout_id: str = "sd15_unet_17") -> dict[str, float]:
    return dict.fromkeys(get_layout(layout_id).block_ids, 0.5)


def test_migration_adds_the_description_column(db):
    assert MIGRATION_NAMES[-1] == "m006_profile_descriptions"
    assert db["profiles"].columns_dict["description"] is str


def test_create_get_and_row_contents(db):
    p = create_profile(db, " soft ", "sd15_unet_17", half(), description="half strength")
    assert p.id is not None and p.name == "soft" and p.source == "user" and p.created == p.updated
    row = db["profiles"].get(p.id)
    assert row["layout_id"] == "sd15_unet_17" and row["description"] == "half strength" and row["lora_id"] is None
    assert json.loads(row["weights"]) == {**half(), "REST": 1.0}  # REST (keys outside every block) stored too
    assert get_profile(db, "soft") == p == get_profile_by_id(db, p.id)
    assert get_profile(db, "soft", "sd15_unet_17").vector() == [0.5] * 17


def test_create_validates(db):
    with pytest.raises(ProfileError, match="block 'IN00' is not in layout sd15_unet_17"):
        create_profile(db, "x", "sd15_unet_17", {**half(), "IN00": 1})
    with pytest.raises(ProfileError, match="missing OUT11"):
        create_profile(db, "x", "sd15_unet_17", {b: 1 for b in SD17[:-1]})
    with pytest.raises(ProfileError, match="source is 'user' or 'imported', not 'builtin'"):
        create_profile(db, "x", "sd15_unet_17", half(), source="builtin")
    assert db["profiles"].count == 0


def test_duplicate_names_in_a_layout_are_a_clear_error(db):
    first = create_profile(db, "soft", "sd15_unet_17", half())
    with pytest.raises(ProfileError) as exc:
        create_profile(db, "Soft", "sd15_unet_17", half())
    assert str(exc.value) == (f"a profile named 'soft' already exists for layout sd15_unet_17 (id {first.id}); "
                              "choose another name or edit that one.")
    other = create_profile(db, "soft", "sd15_unet_26", half("sd15_unet_26"))  # another layout: fine
    with pytest.raises(ProfileError, match=r"'soft' exists for several layouts \(sd15_unet_17, sd15_unet_26\)"):
        get_profile(db, "soft")
    assert get_profile(db, "soft", "sd15_unet_26").id == other.id


def test_builtin_names_are_refused_for_library_profiles(db):
    with pytest.raises(ProfileError) as exc:
        create_profile(db, "outd", "sd15_unet_17", half())
    assert str(exc.value) == ("'OUTD' is a built-in profile of layout sd15_unet_17; choose another name (to change a "
                              "built-in, duplicate it under a new name).")
    assert create_profile(db, "DOUBLE", "sd15_unet_17", half()).name == "DOUBLE"  # a Flux built-in name only


def test_builtins_are_read_only(db):
    ins = get_profile(db, "INS", "sd15_unet_17")
    assert ins.builtin and ins.id is None
    for call in (lambda: update_profile(db, ins, name="mine"), lambda: delete_profile(db, ins)):
        with pytest.raises(ProfileError) as exc:
            call()
        assert str(exc.value) == ("INS · sd15_unet_17 is a built-in profile and read-only; duplicate it first "
                                  "(`lorawb profiles duplicate INS NEW_NAME --layout sd15_unet_17`) and change the "
                                  "copy.")


def test_update_renames_reweights_and_bumps_updated(db, monkeypatch):
    p = create_profile(db, "soft", "sd15_unet_17", half(), description="one")
    monkeypatch.setattr(store_module, "utcnow", lambda: "2099-01-01T00:00:00Z")
    q = update_profile(db, p.id, name="softer", weights={"IN04": 2, "OUT11": -1})
    assert q.id == p.id and q.name == "softer" and q.description == "one"
    assert q.weights["IN04"] == 2 and q.weights["OUT11"] == -1 and q.weights["BASE"] == 0.5  # partial map merged
    assert q.updated == "2099-01-01T00:00:00Z" and q.created == p.created
    assert update_profile(db, q, description="two").description == "two"
    with pytest.raises(ProfileNotFound):
        get_profile(db, "soft", "sd15_unet_17")
    with pytest.raises(ProfileError, match="block IN04: weight 11 is outside"):
        update_profile(db, p.id, weights={"IN04": 11})
    assert get_profile_by_id(db, p.id).weights["IN04"] == 2  # a refused update changes nothing


def test_rename_onto_a_taken_name_is_refused(db):
    a = create_profile(db, "a", "sdxl_unet_12", half("sdxl_unet_12"))
    create_profile(db, "b", "sdxl_unet_12", half("sdxl_unet_12"))
    with pytest.raises(ProfileError, match="a profile named 'b' already exists for layout sdxl_unet_12"):
        update_profile(db, a.id, name="b")
    with pytest.raises(ProfileError, match="'ALL' is a built-in profile of layout sdxl_unet_12"):
        update_profile(db, a.id, name="all")
    assert update_profile(db, a.id, name="A").name == "A"  # the same profile may change case


def test_duplicate_builtin_and_library_profiles(db):
    outd = get_profile(db, "OUTD", "sd15_unet_26")
    copy = duplicate_profile(db, outd, "my-outd")
    assert copy.source == "user" and copy.id is not None and copy.layout_id == "sd15_unet_26"
    assert copy.vector() == outd.vector() and copy.description == outd.description
    again = duplicate_profile(db, copy.id, "my-outd-2")
    assert again.vector() == outd.vector() and again.id != copy.id
    with pytest.raises(ProfileError, match="a profile named 'my-outd' already exists"):
        duplicate_profile(db, outd, "my-outd")


def test_delete_and_not_found(db):
    p = create_profile(db, "gone", "flux_dit_61", half("flux_dit_61"))
    delete_profile(db, p.id)
    with pytest.raises(ProfileNotFound) as exc:
        get_profile_by_id(db, p.id)
    assert str(exc.value) == f"no profile with id {p.id} in the library; `lorawb profiles list` shows the ids."
    assert isinstance(exc.value, LorawbError) and isinstance(exc.value, KeyError)
    with pytest.raises(ProfileNotFound):
        delete_profile(db, p.id)


def test_unknown_name_lists_what_exists(db):
    create_profile(db, "mine", "sdxl_unet_12", half("sdxl_unet_12"))
    with pytest.raises(ProfileNotFound) as exc:
        get_profile(db, "MINE", "sdxl_unet_12")
    assert str(exc.value) == ("no profile named 'MINE' for layout sdxl_unet_12 (did you mean 'mine'? names are exact); "
                              "known for layout sdxl_unet_12: ALL, NONE, ALL0.5, INS, IND, INALL, MIDD, OUTD, OUTS, "
                              "OUTALL, mine.")


def test_list_builtins_first_then_by_name(db):
    create_profile(db, "zeta", "sdxl_unet_12", half("sdxl_unet_12"))
    create_profile(db, "Alpha", "sdxl_unet_12", half("sdxl_unet_12"), source="imported")
    create_profile(db, "beta", "flux_dit_61", half("flux_dit_61"))
    listed = list_profiles(db, "sdxl_unet_12")
    assert [p.name for p in listed] == [p.name for p in builtin_profiles("sdxl_unet_12")] + ["Alpha", "zeta"]
    assert [p.label for p in list_profiles(db, builtins=False)] == ["Alpha · sdxl_unet_12", "beta · flux_dit_61",
                                                                    "zeta · sdxl_unet_12"]
    assert len(list_profiles(db)) == len(builtin_profiles()) + 3


def test_save_imported_profiles_skips_taken_names(db):
    create_profile(db, "taken", "sd15_unet_17", half())
    report = import_profiles("taken:" + ",".join(["1"] * 17) + "\nfresh:" + ",".join(["0"] * 17) + "\nINS:"
                             + ",".join(["1"] * 17), dialect="lbw")
    dry = save_profiles(db, report.profiles, dry_run=True)
    assert [p.name for p in dry.created] == ["fresh"] and db["profiles"].count == 1
    saved = save_profiles(db, report.profiles)
    assert [(p.name, p.source) for p in saved.created] == [("fresh", "imported")] and saved.created[0].id
    assert [s.item for s in saved.skipped] == ["taken · sd15_unet_17", "INS · sd15_unet_17"]
    assert saved.skipped[0].reason.startswith("a profile named 'taken' already exists for layout sd15_unet_17")


def test_parse_weights_finds_library_profiles(db):
    mine = create_profile(db, "mine", "sd15_unet_17", half())
    calls = []

    def known():
        calls.append(1)
        return list_profiles(db, builtins=False)

    assert parse_weights(",".join(["0.5"] * 17), layout_id="sd15_unet_17", known=known).dialect == "vector"
    assert not calls  # a vector never asks for the library's profiles
    r = parse_weights("mine", layout_id="sd15_unet_17", known=known)
    assert r.dialect == "profile" and r.profile.id == mine.id and r.profile.vector() == [0.5] * 17 and calls
    r = parse_weights("mine", layout_id="sd15_unet_26", known=known)  # a sibling layout's profile is converted
    assert r.profile.layout_id == "sd15_unet_26" and r.profile.weights["IN00"] == 0 and r.profile.weights["IN01"] == 0.5
    with pytest.raises(ProfileError, match="'mine' is not a vector, assignments or a profile known"):
        parse_weights("mine", layout_id="sd15_unet_17")  # without known profiles only built-ins are known


def test_damaged_row_is_reported_with_what_to_do(db):
    p = create_profile(db, "ok", "sd15_unet_17", half())
    db["profiles"].update(p.id, {"weights": "{broken"})
    with pytest.raises(ProfileError, match=f"profile id {p.id} \\('ok'\\) in the library cannot be read .* "
                                           f"`lorawb profiles delete {p.id}`"):
        list_profiles(db)


def test_rest_is_stored_and_survives_a_partial_update(db):
    p = create_profile(db, "no-rest", "sd15_unet_17", {**half(), "REST": 0})
    assert get_profile_by_id(db, p.id).rest == 0.0
    updated = update_profile(db, p.id, weights={"IN01": 1})
    assert updated.rest == 0.0 and get_profile_by_id(db, p.id).weights["IN01"] == 1.0
    assert update_profile(db, p.id, weights={"REST": 0.5}).rest == 0.5
    assert create_profile(db, "default-rest", "sd15_unet_17", half()).rest == 1.0
