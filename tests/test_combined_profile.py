"""Save combined as profile: a stack's per-block combined weights stored as a new profile of its layout."""

from __future__ import annotations

import json

import pytest
from test_compose import lib  # noqa: F401  (the fixture: a real library of sd15 LoRAs)

from lorawb_core.combined_profile import save_combined_profile
from lorawb_core.errors import IncompatibleStack, ProfileError
from lorawb_core.inspection import inspect_structure
from lorawb_core.layouts import REST
from lorawb_core.profiles import builtin_profiles, get_profile_by_id, list_profiles
from lorawb_core.tensors import open_tensors


def _block_norms(path) -> dict[str, float]:
    """‖ΔW(b)‖ per block at weight 1, from the dense deltas (independent of the measured figures)."""
    an = inspect_structure(path)
    energy: dict[str, float] = {}
    with open_tensors(an.structure) as loader:
        for m in an.modules:
            d = m.adapter.delta(lambda p, m=m: loader.get(m.adapter.params[p].key)).double()
            energy[m.block] = energy.get(m.block, 0.0) + float(d.pow(2).sum())
    return {b: e ** 0.5 for b, e in energy.items()}


def test_single_lora_with_weights_saves_the_weights_themselves(lib):  # noqa: F811
    db, ids, _, _ = lib
    outd = next(p for p in builtin_profiles("sd15_unet_17") if p.name == "OUTD")
    saved = save_combined_profile(db, [f"{ids['a']}:0.7@OUTD"], "a-outd")
    stored = get_profile_by_id(db, saved.profile.id)
    assert stored.layout_id == "sd15_unet_26" and stored.source == "user"
    from lorawb_core.apply import resolve_weights

    expected = resolve_weights(outd, "sd15_unet_26").weights
    assert stored.weights == {b: pytest.approx(w, abs=1e-12) for b, w in expected.items()}
    assert min(stored.weights.values()) == 0 and max(stored.weights.values()) == 1  # OUTD really varies


def test_stack_weights_are_the_share_weighted_mean_of_the_block_weights(lib):  # noqa: F811
    db, ids, files, _ = lib
    outd = next(p for p in builtin_profiles("sd15_unet_17") if p.name == "OUTD")
    saved = save_combined_profile(db, [{"lora": ids["a"], "strength_model": 0.8},
                                       {"lora": ids["b"], "strength_model": -0.5, "weights": "OUTD"}], "mix")
    na, nb = _block_norms(files["a"]), _block_norms(files["b"])
    from lorawb_core.apply import resolve_weights

    wb = resolve_weights(outd, "sd15_unet_26").weights
    w = saved.profile.weights
    acted = set(na) | set(nb)
    assert len(acted) >= 3
    for block in acted:
        sa, sb = 0.8 * na.get(block, 0.0), 0.5 * nb.get(block, 0.0)
        assert w[block] == pytest.approx((sa * 1.0 + sb * wb[block]) / (sa + sb), abs=2e-6), block
    assert any(0 < w[b] < 1 for b in acted)  # a real mix, not a copy of either input
    untouched = [b for b in w if b not in acted and b != REST]
    assert untouched and all(w[b] == pytest.approx((1.0 + wb[b]) / 2) for b in untouched)
    assert saved.profile.description.startswith(f"combined block weights of {ids['a']}×0.8, {ids['b']}×-0.5@OUTD")


def test_refused_stack_and_taken_name_store_nothing(lib):  # noqa: F811
    db, ids, _, _ = lib
    before = len(list_profiles(db, builtins=False))
    with pytest.raises(IncompatibleStack, match="sdxl LoRA but the rest of the stack is sd15"):
        save_combined_profile(db, [ids["a"], ids["xl"]], "never")
    save_combined_profile(db, [ids["a"]], "taken")
    with pytest.raises(ProfileError, match="taken"):
        save_combined_profile(db, [ids["b"]], "taken")
    assert [p.name for p in list_profiles(db, builtins=False)][before:] == ["taken"]


def test_compose_cli_save_profile(lib, capsys):  # noqa: F811
    from lorawb_core.cli import main

    db, ids, _, _ = lib
    path = db.conn.execute("PRAGMA database_list").fetchone()[2]
    assert main(["compose", f"{ids['a']}:0.5", f"{ids['b']}@OUTD", "--db", path, "--save-profile", "cli-mix"]) == 0
    assert "saved the combined block weights as profile cli-mix · sd15_unet_26" in capsys.readouterr().out
    assert main(["compose", ids["a"], "--db", path, "--json", "--save-profile", "cli-one", "--no-directions"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["saved_profile"]["name"] == "cli-one" and set(out["saved_profile"]["weights"].values()) == {1.0}
    assert main(["compose", ids["a"], ids["xl"], "--db", path, "--save-profile", "refused"]) == 1
    assert "refused" not in {p.name for p in list_profiles(db, builtins=False)}
