"""The ``<lorawb:…>`` tag and the ``lorawb:`` infotext line (host-free parsing; the A1111/Forge hosts use it), and the
file-key → block mapping the hosts' per-module multipliers come from."""

from __future__ import annotations

import pytest

from lorawb_core.apply import block_of_file_key, resolve_weights
from lorawb_core.errors import LorawbError
from lorawb_core.profiles import parse_weights
from lorawb_core.prompt_tags import LorawbTag, TagError, format_infotext, parse_infotext, parse_tag


def items(text: str) -> list[str]:
    """What A1111's parse_prompt hands over for ``<lorawb:TEXT>`` (the text split on ':')."""
    return text.split(":")


@pytest.mark.parametrize(("text", "expect"), [
    ("SD1-CHR-001", LorawbTag("SD1-CHR-001")),
    ("SD1-CHR-001:0.8", LorawbTag("SD1-CHR-001", 0.8)),
    ("my lora:0.8:OUTD", LorawbTag("my lora", 0.8, weights="OUTD")),
    ("SD1-CHR-001:1:1,0,0,0,0,0,0,0,1,1,1,1", LorawbTag("SD1-CHR-001", 1.0, weights="1,0,0,0,0,0,0,0,1,1,1,1")),
    # BLOCK=value weights stay weights (A1111 would call IN04-OUT05=0.5 a named argument)
    ("SD1-CHR-001:0.5:IN04-OUT05=0.5", LorawbTag("SD1-CHR-001", 0.5, weights="IN04-OUT05=0.5")),
    ("SD1-CHR-001:0.5:BASE=1,IN04=0", LorawbTag("SD1-CHR-001", 0.5, weights="BASE=1,IN04=0")),
    ("SD1-CHR-001:1:lbw=OUTD:te=0.3", LorawbTag("SD1-CHR-001", 1.0, te=0.3, weights="OUTD")),
    ("SD1-CHR-001:0.7:w=INS:unet=0.9", LorawbTag("SD1-CHR-001", 0.7, unet=0.9, weights="INS")),
    ("SD1-CHR-001:1:OUTD:start=5:stop=20", LorawbTag("SD1-CHR-001", 1.0, weights="OUTD", start=5, stop=20)),
    ("SD1-CHR-001:1:step=3-9", LorawbTag("SD1-CHR-001", 1.0, start=3, stop=9)),
    (" SD1-CHR-001 : -0.5 ", LorawbTag("SD1-CHR-001", -0.5)),
])
def test_parse_tag(text, expect):
    tag = parse_tag(items(text))
    assert tag == expect
    assert parse_tag(items(tag.prompt_text()[len("<lorawb:"):-1])) == tag  # the tag text reads back


def test_strengths_follow_lbw_meaning():
    tag = parse_tag(items("X:0.8:te=0.2"))
    assert (tag.unet_strength, tag.te_strength) == (0.8, 0.2)
    tag = parse_tag(items("X:0.8:unet=0.4"))
    assert (tag.unet_strength, tag.te_strength) == (0.4, 0.8)


@pytest.mark.parametrize(("text", "words"), [
    ("", "needs a LoRA"),
    ("X:abc", "strength 'abc' is not a number"),
    ("X:nan", "not a number"),
    ("X:1:OUTD:INS", "too many parts"),
    ("X:1:OUTD:lbw=INS", "given twice"),
    ("X:1:te=1:te=2", "te= is given twice"),
    ("X:1:start=x", "whole number"),
    ("X:1:start=9:stop=3", "not after start"),
    ("X:1:step=5", "step=START-END"),
    ("X:1:step=1-4:start=2", "give one of them"),
    ("X:1:lbw=", "weights part is empty"),
    ("X:1:lbwe=OUTD", "elemental weights"),
    ("X:1:dyn=4", "rank trimming"),
])
def test_bad_tags_say_what_is_wrong(text, words):
    with pytest.raises(TagError, match=words) as err:
        parse_tag(items(text))
    assert isinstance(err.value, LorawbError) and "<lorawb:" in str(err.value)


def test_weights_text_carries_lbw_steps_into_parse_weights():
    tag = parse_tag(items("X:1:OUTD:start=4:stop=10"))
    parsed = parse_weights(tag.weights_text(), family="sd15")
    spans = {s.range_text() for pieces in parsed.profile.schedule.values() for s in pieces}
    assert spans == {"4-10"}
    plain = parse_weights(parse_tag(items("X:1:OUTD")).weights_text(), family="sd15")
    assert plain.profile.weights == parsed.profile.weights and not plain.profile.schedule
    assert parse_tag(items("X:1:start=2")).weights_text() == "ALL start=2"


def test_infotext_round_trip():
    tags = [parse_tag(items("my lora:0.8:OUTD")), parse_tag(items("SDX-STY-002:1:1,0,0,0,0,0,0,0,1,1,1,1:te=0.5")),
            parse_tag(items("SD1-CHR-003:0.6:IN04-OUT05=0.5, default=0:start=2:stop=9"))]
    text = format_infotext([tags[0].infotext_entry("SD1-CHR-001"), tags[1].infotext_entry(),
                            tags[2].infotext_entry()])
    assert text.startswith("SD1-CHR-001:0.8@OUTD, SDX-STY-002:1:te=0.5@(1,0,0,0,0,0,0,0,1,1,1,1), ")
    back = parse_infotext(text)
    assert back == [LorawbTag("SD1-CHR-001", 0.8, weights="OUTD"), tags[1], tags[2]]
    assert parse_infotext("") == []
    with pytest.raises(TagError, match="nothing after '@'"):
        parse_infotext("SD1-CHR-001:1@")


@pytest.mark.parametrize(("key", "family", "block"), [
    ("lora_unet_down_blocks_1_attentions_0_proj_in.alpha", "sd15", "IN04"),
    ("lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn1_to_q.lora_down.weight", "sd15", "OUT11"),
    ("lora_unet_mid_block_attentions_0_proj_out.lora_up.weight", "sd15", "M00"),
    ("lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight", "sd15", "BASE"),
    ("lora_unet_input_blocks_4_1_proj_in.lora_down.weight", "sdxl", "IN04"),
    ("lora_te2_text_model_encoder_layers_3_mlp_fc1.hada_w1_a", "sdxl", "BASE"),
])
def test_file_keys_map_to_the_registry_blocks(key, family, block):
    layout = resolve_weights(None, {"sd15": "sd15_unet_17", "sdxl": "sdxl_unet_12"}[family]).layout_id
    assert block_of_file_key(key, family, layout) == block
