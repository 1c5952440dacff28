"""``<lorawb:…>`` tags → what the A1111/Forge host applies, through the compose gate, on a real library of real LoRA
files (no host needed: the adapters only wire these numbers into the host's own LoRA machinery)."""

from __future__ import annotations

import os

import pytest
from library_helpers import db_at, ids_by_name, quick_scan, tiny

from lorawb_core.errors import IncompatibleStack
from lorawb_core.layouts import REST, get_layout
from lorawb_core.profiles.store import create_profile
from lorawb_core.prompt_tags import parse_infotext, parse_tag
from lorawb_core.tag_plan import plan_tags


@pytest.fixture
def lib(tmp_path):
    root = tmp_path / "Lora"
    tiny(root / "char_a.safetensors", "sd15", 1)
    tiny(root / "style_b.safetensors", "sd15", 2, metadata={"ss_output_name": "Style Bee"})
    tiny(root / "xl_c.safetensors", "sdxl", 3)
    tiny(root / "sub" / "char_a.safetensors", "sd15", 4)  # a second file of the same name
    tiny(root / "gone.safetensors", "sd15", 5)
    db = db_at(tmp_path / "db" / "library.sqlite3")
    quick_scan(db, [root])
    os.remove(root / "gone.safetensors")
    ids = ids_by_name(db)
    yield db, ids, root
    db.close()


def tags(*texts: str):
    return [parse_tag(t.split(":")) for t in texts]


def sid_of(db, rel: str) -> str:
    return db.execute("SELECT stable_id FROM loras WHERE rel_path = ?", [rel]).fetchone()[0]


def test_a_tag_by_id_gets_every_block_at_one(lib):
    db, ids, _ = lib
    sid = ids["style_b.safetensors"]
    plan = plan_tags(db, tags(f"{sid}:0.8"), model_family="sd15")
    (p,) = plan.loras
    assert (p.stable_id, p.family, p.layout_id, p.weights_source) == (sid, "sd15", "sd15_unet_26", "uniform")
    assert set(p.weights) == {*get_layout("sd15_unet_26").block_ids, REST} and set(p.weights.values()) == {1.0}
    assert p.path.endswith("style_b.safetensors") and (p.tag.unet_strength, p.tag.te_strength) == (0.8, 0.8)
    assert plan.infotext() == f"{sid}:0.8"


def test_weights_in_each_dialect_and_library_profiles(lib):
    db, ids, _ = lib
    sid = ids["style_b.safetensors"]
    outd = plan_tags(db, tags(f"{sid}:1:OUTD"), model_family="sd15").loras[0].weights
    assert outd["OUT03"] == 1 and outd["IN04"] == 0 and outd["BASE"] == 1  # LBW's OUTD keeps BASE
    vector = plan_tags(db, tags(f"{sid}:1:1,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1,1"), model_family="sd15").loras[0]
    assert vector.weights["IN04"] == 0 and vector.weights["M00"] == 1
    assign = plan_tags(db, tags(f"{sid}:1:IN04=0.25,default=1"), model_family="sd15").loras[0].weights
    assert assign["IN04"] == 0.25 and assign["OUT11"] == 1
    none = plan_tags(db, tags(f"{sid}:1:NONE"), model_family="sd15").loras[0].weights
    assert not any(v for b, v in none.items() if b != REST)
    create_profile(db, "my-mids", "sd15_unet_17", {b: (1.0 if b == "M00" else 0.0)
                                                   for b in get_layout("sd15_unet_17").block_ids})
    mine = plan_tags(db, tags(f"{sid}:1:lbw=my-mids"), model_family="sd15").loras[0]
    assert mine.weights["M00"] == 1 and mine.weights["IN04"] == 0 and "my-mids" in mine.weights_source


def test_names_resolve_to_one_lora_or_say_which(lib):
    db, ids, _ = lib
    assert plan_tags(db, tags("Style Bee:1")).loras[0].stable_id == ids["style_b.safetensors"]
    assert plan_tags(db, tags("xl_c:1")).loras[0].stable_id == ids["xl_c.safetensors"]
    with pytest.raises(IncompatibleStack, match=r"2 LoRAs are called 'char_a' \(.*\); use the stable ID"):
        plan_tags(db, tags("char_a:1"))
    with pytest.raises(IncompatibleStack, match="no LoRA in the library is called 'nobody'"):
        plan_tags(db, tags("nobody:1"))


def test_the_gate_refuses_with_every_reason(lib):
    db, ids, _ = lib
    sd15, xl = ids["style_b.safetensors"], ids["xl_c.safetensors"]
    with pytest.raises(IncompatibleStack) as err:
        plan_tags(db, tags(f"{sd15}:1", f"{xl}:1", "SD1-ZZZ-999:1"), model_family="sd15")
    text = str(err.value)
    assert "✗ SD1-ZZZ-999: " in text and "sdxl" in text
    with pytest.raises(IncompatibleStack) as err:
        plan_tags(db, tags(f"{sd15}:1", f"{xl}:1"), model_family="sd15")
    assert "it is a sdxl LoRA but the model is sd15" in str(err.value)
    with pytest.raises(IncompatibleStack, match="weights 'IN99=1'"):
        plan_tags(db, tags(f"{sd15}:1:IN99=1"), model_family="sd15")


def test_a_missing_file_is_refused_or_left_out_with_a_warning(lib):
    db, ids, _ = lib
    gone, ok = ids["gone.safetensors"], ids["style_b.safetensors"]
    with pytest.raises(IncompatibleStack, match=f"LoRA {gone} .* is missing"):
        plan_tags(db, tags(f"{gone}:1", f"{ok}:1"), model_family="sd15")
    plan = plan_tags(db, tags(f"{gone}:1", f"{ok}:1"), model_family="sd15", missing_ok=True)
    assert [p.stable_id for p in plan.loras] == [ok]
    assert len(plan.warnings) >= 1 and gone in plan.warnings[0] and "left out" in plan.warnings[0]


def test_infotext_records_ids_and_reads_back(lib):
    db, ids, _ = lib
    plan = plan_tags(db, tags("Style Bee:0.7:OUTD:te=0.5"), model_family="sd15")
    text = plan.infotext()
    assert text == f"{ids['style_b.safetensors']}:0.7:te=0.5@OUTD"
    (back,) = parse_infotext(text)
    assert back.ref == ids["style_b.safetensors"] and back.weights == "OUTD" and back.te == 0.5
