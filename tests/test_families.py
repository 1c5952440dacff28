"""The family registry is consistent with itself and with everything that reads it."""

import doctest
from collections import Counter

import lorawb_core.families as families_module
from lorawb_core.families import (
    COMFY_CLASSES,
    FAMILIES,
    PRESET_SETS,
    UNKNOWN,
    UNKNOWN_ID_CODE,
    DoubleSingleDiT,
    SdUnet,
    family_of_comfy_class,
    id_code_of,
    title_of,
)
from lorawb_core.layouts import LAYOUTS, family_map, get_layout
from lorawb_core.library.stable_ids import FAMILY_CODES, ID_RE
from lorawb_core.profiles import builtin_profiles

TEXT_COMPONENTS = {"te", "te1", "te2", "te3"}


def test_every_layout_of_a_record_exists_in_the_registry_and_belongs_to_it():
    for fam in FAMILIES.values():
        assert fam.layouts, fam.code
        for lid in fam.layouts:
            layout = get_layout(lid)
            assert layout.family == fam.code and not layout.is_view and lid.startswith(fam.code + "_")
        for lid in fam.views:
            view = get_layout(lid)
            assert view.family == fam.code and view.is_view and view.full in fam.layouts


def test_every_layout_of_the_registry_is_listed_by_exactly_one_record():
    listed = Counter(lid for fam in FAMILIES.values() for lid in (*fam.layouts, *fam.views))
    assert set(listed) == set(LAYOUTS)
    assert max(listed.values()) == 1


def test_codes_titles_and_id_codes_are_unique():
    for attr in ("code", "title", "id_code"):
        values = [getattr(f, attr) for f in FAMILIES.values()]
        assert len(values) == len(set(values)), attr
    for fam in FAMILIES.values():
        assert ID_RE.fullmatch(f"{fam.id_code}-GEN-001"), fam.id_code  # a stable ID can start with it
        assert fam.id_code != UNKNOWN_ID_CODE and fam.code != UNKNOWN
    assert FAMILY_CODES == {**{f.code: f.id_code for f in FAMILIES.values()}, UNKNOWN: UNKNOWN_ID_CODE}
    assert id_code_of(None) == id_code_of("no-such-family") == UNKNOWN_ID_CODE and title_of(UNKNOWN) == UNKNOWN


def test_every_comfy_class_maps_to_one_family():
    classes = Counter(cls for fam in FAMILIES.values() for cls in fam.comfy_classes)
    assert classes and max(classes.values()) == 1
    for fam in FAMILIES.values():
        assert fam.comfy_classes, f"{fam.code} is loaded as no ComfyUI model class"
        assert all(family_of_comfy_class(cls) == fam.code for cls in fam.comfy_classes)
    assert len(COMFY_CLASSES) == sum(classes.values()) and family_of_comfy_class("NoSuchModel") is None


def test_architecture_facts_agree_with_the_layouts():
    for fam in FAMILIES.values():
        arch = fam.architecture
        assert set(fam.text_encoders) <= TEXT_COMPONENTS
        assert fam.presets in PRESET_SETS and (fam.presets == "lbw") == isinstance(arch, SdUnet)
        assert fam.backbone == ("unet" if isinstance(arch, SdUnet) else "dit")
        if isinstance(arch, SdUnet):
            groups = [arch.shallow_in, arch.deep_in, arch.deep_out, arch.shallow_out]
            assert all(groups) and len(set(arch.attention_in)) == len(arch.shallow_in) + len(arch.deep_in)
            assert len(set(arch.attention_out)) == len(arch.deep_out) + len(arch.shallow_out)
            assert max(arch.attention_in) < arch.inputs and max(arch.attention_out) < arch.outputs
            assert len(fam.views) == 1
            view = get_layout(fam.views[0])
            assert view.block_ids == ["BASE", *(f"IN{i:02d}" for i in arch.attention_in), "M00",
                                      *(f"OUT{i:02d}" for i in arch.attention_out)]
        if isinstance(arch, DoubleSingleDiT):
            ids = get_layout(fam.layouts[0]).block_ids
            assert ids.count("IN") == 1 and f"D{arch.double - 1:02d}" in ids and f"S{arch.single - 1:02d}" in ids
            for bid, _, encoder in arch.text_blocks:  # a text-encoder block takes that encoder's weights
                assert family_map(fam.code).block_of(f"{encoder}.transformer.text_model.encoder.layers.0.mlp.fc1") \
                    == bid


def test_every_full_layout_is_reachable_by_detection_depth():
    for fam in FAMILIES.values():
        reached = {family_map(fam.code, depth).full.id for depth in (None, 0, 24, 30, 38, 40, 60)}
        assert reached == set(fam.layouts), fam.code


def test_every_layout_has_its_family_preset_set():
    for fam in FAMILIES.values():
        for lid in (*fam.layouts, *fam.views):
            names = {p.name for p in builtin_profiles(lid)}
            expected = {"lbw": "MIDD", "flux": "DBL-FRONT7", "thirds": "MIDDLE"}[fam.presets]
            assert {"ALL", "NONE", "ALL0.5", expected} <= names, lid


def test_module_examples():
    result = doctest.testmod(families_module)
    assert result.attempted >= 2 and result.failed == 0
