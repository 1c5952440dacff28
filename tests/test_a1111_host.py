"""The pack as an extension of a real AUTOMATIC1111 v1.10.1 and a real Forge, on CPU (``bash .ci/a1111-host``).

Each host is started once per module (tests/webui_host.py) with a small SD1.5 checkpoint and a kohya LoRA written
by peft (tests/sd15_checkpoint.py), the pack linked into its extensions folder; images come from its own
``/sdapi/v1/txt2img`` (64×64, 2 Euler steps, fixed seed) and are compared pixel for pixel. Skipped (allowed in CI by
tests/skip_policy.py) unless A1111_DIR + A1111_PYTHON / FORGE_DIR + FORGE_PYTHON name a checkout and its venv.
"""

from __future__ import annotations

import json
import re
import time

import pytest
from library_helpers import tiny
from sd15_checkpoint import write_lora, write_tiny_checkpoint
from ui_helpers import CHROMIUM, CHROMIUM_ARGS, free_port
from webui_host import HOSTS, Generated, WebuiHost, configured

from lorawb_core.prompt_tags import parse_infotext

LORA_NAME = "tiny-lora"
SDXL_NAME = "xl-style"
PROFILE = "a2-outputs-only"
PROMPT = "a red cat"


@pytest.fixture(scope="session")
def sd15_models(tmp_path_factory):
    base = tmp_path_factory.mktemp("sd15-models")
    ckpt = write_tiny_checkpoint(base / "Stable-diffusion")
    (base / "Lora").mkdir()
    write_lora(base / "Lora" / f"{LORA_NAME}.safetensors")
    tiny(base / "Lora" / f"{SDXL_NAME}.safetensors", "sdxl", seed=5)  # for the refusals
    return ckpt


@pytest.fixture(scope="module", params=sorted(HOSTS), ids=lambda kind: {"a1111": "automatic1111"}.get(kind, kind))
def webui(request, tmp_path_factory):
    found = configured(request.param)
    if isinstance(found, str):
        pytest.skip(found)
    path, python = found
    sd15_models = request.getfixturevalue("sd15_models")  # written only when a host will run
    host = WebuiHost(kind=request.param, path=path, python=python, workdir=tmp_path_factory.mktemp(request.param),
                     port=free_port(), ckpt_dir=sd15_models.checkpoint.parent,
                     lora_dir=sd15_models.checkpoint.parent.parent / "Lora")
    host.start(sd15_models.checkpoint.name)
    host.images = {}
    host.timings = []
    try:
        yield host
    finally:
        host.stop()
        times = ", ".join(f"{s:.1f}" for s in host.timings)
        print(f"\n{host.kind}: answered after {host.startup_seconds:.1f} s; txt2img 64x64 2 steps: {times} s")


def image(host: WebuiHost, prompt: str, init: Generated | None = None) -> Generated:
    """txt2img (img2img from ``init``) once per prompt and host (the tests compare the same images)."""
    key = (prompt, init.png if init else None)
    if key not in host.images:
        started = time.monotonic()
        host.images[key] = host.txt2img(prompt, init_image=init.png if init else None)
        host.timings.append(time.monotonic() - started)
    return host.images[key]


@pytest.fixture(scope="module")
def lora_id(webui) -> str:
    loras = webui.wait_for_scan()
    entry = next((e for e in loras if e["file_name"].startswith(LORA_NAME)), None)
    assert entry is not None, loras
    assert entry["family"] == "sd15" and entry["scan_state"] == "ready", entry
    return entry["stable_id"]


@pytest.fixture(scope="module")
def sdxl_id(webui, lora_id) -> str:
    entry = next(e for e in webui.get("/lorawb/loras")["items"] if e["file_name"].startswith(SDXL_NAME))
    assert entry["family"] == "sdxl", entry
    return entry["stable_id"]


@pytest.fixture(scope="module")
def profile(webui, lora_id) -> dict:
    """A library profile on the LoRA's layout: input blocks 0, every other block 1."""
    entry = webui.get(f"/lorawb/loras/{lora_id}")
    layout = webui.get(f"/lorawb/layouts/{entry['layout_id']}")
    weights = [0.0 if b["group"] == "IN" else 1.0 for b in layout["blocks"]]
    assert 0.0 in weights and 1.0 in weights, layout["blocks"]
    status, body = webui.request("POST", "/lorawb/profiles",
                                 {"name": PROFILE, "layout_id": entry["layout_id"], "weights": weights})
    assert status == 201, body
    return body


def test_routes_answer_on_the_hosts_port(webui, lora_id):
    info = webui.get("/lorawb/info")
    assert isinstance(info, dict) and info, info
    blocks = webui.get(f"/lorawb/loras/{lora_id}/blocks")
    assert blocks, blocks
    status, body = webui.request("GET", "/lorawb/loras/SD1-XXX-999")
    assert status == 404 and "error" in body, (status, body)
    # the host's own API is still there beside them
    assert any(m["model_name"] == "tiny-sd15" for m in webui.get("/sdapi/v1/sd-models"))


def test_lorawb_tag_gives_the_hosts_own_lora_image(webui, lora_id):
    plain = image(webui, PROMPT)
    own = image(webui, f"{PROMPT} <lora:{LORA_NAME}:1>")
    ours = image(webui, f"{PROMPT} <lorawb:{lora_id}:1>")
    assert own.pixels != plain.pixels, "the host's own LoRA changed nothing: the test would prove nothing"
    assert ours.pixels == own.pixels


def test_te_strength_is_the_hosts_text_encoder_multiplier(webui, lora_id):
    """``te=0`` keeps the UNet part only, as the host's ``<lora:name:TE:UNET>`` does with TE 0."""
    own = image(webui, f"{PROMPT} <lora:{LORA_NAME}:0:1>")
    assert own.pixels != image(webui, f"{PROMPT} <lora:{LORA_NAME}:1>").pixels  # the text-encoder part counts
    assert image(webui, f"{PROMPT} <lorawb:{lora_id}:1:te=0>").pixels == own.pixels


def test_img2img_applies_the_tag_like_the_hosts_lora(webui, lora_id):
    init = image(webui, PROMPT)
    own = image(webui, f"{PROMPT} <lora:{LORA_NAME}:1>", init)
    assert own.pixels != image(webui, PROMPT, init).pixels
    assert image(webui, f"{PROMPT} <lorawb:{lora_id}:1>", init).pixels == own.pixels


def test_a_refused_stack_stops_the_generation_with_the_gates_reasons(webui, lora_id, sdxl_id):
    """An SDXL LoRA on the SD1.5 checkpoint: no image, an error that names it and both families."""
    status, body = webui.generate(f"{PROMPT} <lorawb:{lora_id}:1> <lorawb:{sdxl_id}:0.5>")
    text = json.dumps(body).lower()
    assert status >= 400 and "images" not in body, (status, body)
    assert "refused" in text and sdxl_id.lower() in text, body
    assert "sdxl lora but the model is sd15" in text, body  # the checkpoint's family, as the host reports it


def test_an_unknown_id_stops_the_generation_naming_it(webui, lora_id):
    status, body = webui.generate(f"{PROMPT} <lorawb:SD1-ZZZ-999:1>")
    assert status >= 400 and "SD1-ZZZ-999" in json.dumps(body), (status, body)


def test_none_weights_give_the_image_without_lora(webui, lora_id):
    assert image(webui, f"{PROMPT} <lorawb:{lora_id}:1:NONE>").pixels == image(webui, PROMPT).pixels


def test_a_profile_changes_the_image(webui, lora_id, profile):
    shaped = image(webui, f"{PROMPT} <lorawb:{lora_id}:1:{PROFILE}>")
    assert shaped.pixels != image(webui, PROMPT).pixels
    assert shaped.pixels != image(webui, f"{PROMPT} <lorawb:{lora_id}:1>").pixels


def test_each_generation_gets_its_own_block_weights(webui, lora_id, profile):
    """Back-to-back generations of one LoRA at one strength, full → profile → full: each image is the one those
    weights give alone (a host patch cache keyed on file and strength would keep the previous weights)."""
    full = image(webui, f"{PROMPT} <lorawb:{lora_id}:1>")
    shaped = image(webui, f"{PROMPT} <lorawb:{lora_id}:1:{PROFILE}>")
    sequence = [webui.txt2img(f"{PROMPT} <lorawb:{lora_id}:1{weights}>") for weights in ("", f":{PROFILE}", "")]
    assert [g.pixels == want.pixels for g, want in zip(sequence, (full, shaped, full), strict=True)] == [True, True, True]


def _infotext_value(infotext: str) -> str:
    match = re.search(r'(?:^|, )lorawb: ("(?:[^"\\]|\\.)*"|[^,]*(?:\([^)]*\)[^,]*)*)', infotext.splitlines()[-1])
    assert match, infotext
    value = match.group(1)
    return value[1:-1].replace('\\"', '"') if value.startswith('"') else value


def test_infotext_records_the_tag(webui, lora_id, profile):
    made = image(webui, f"{PROMPT} <lorawb:{lora_id}:1:{PROFILE}>")
    tags = parse_infotext(_infotext_value(made.infotext))
    assert [(t.ref, t.strength) for t in tags] == [(lora_id, 1.0)], made.infotext
    assert PROFILE in _infotext_value(made.infotext)


@pytest.fixture(scope="module")
def page(webui):
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            pg = browser.new_page(viewport={"width": 1400, "height": 900})
            pg.on("pageerror", lambda e: errors.append(f"{e.message}\n{e.stack}"))
            pg.goto(webui.url, timeout=300_000)
            pg.wait_for_selector("#txt2img_prompt textarea", timeout=300_000)
            pg.page_errors = errors
            yield pg
        finally:
            browser.close()


def test_pasting_the_parameters_restores_the_tag(webui, lora_id, profile, page):
    """The parameters text of a lorawb image, pasted into txt2img with the tag gone from its prompt line (as after
    hand-editing), gives the tag back through the host's own paste button; that prompt makes the same image."""
    made = image(webui, f"{PROMPT} <lorawb:{lora_id}:1:{PROFILE}>")
    lines = made.infotext.splitlines()
    pasted = "\n".join([PROMPT, *lines[1:]])
    prompt = page.locator("#txt2img_prompt textarea")
    prompt.fill(pasted)
    page.locator("#txt2img_tools #paste").click()  # img2img has a #paste of its own
    page.wait_for_function("() => !document.querySelector('#txt2img_prompt textarea').value.includes('Steps:')",
                           timeout=60_000)
    restored = prompt.input_value()
    assert f"<lorawb:{lora_id}:1:{PROFILE}>" in restored, restored
    again = webui.txt2img(restored)
    assert again.pixels == made.pixels


def test_the_tab_renders_the_library(webui, lora_id, page):
    # a tab button of the host's top tab row (Gradio 3 on A1111, Gradio 4 on Forge: no common role)
    page.locator("#tabs button", has_text=re.compile(r"^\s*LoRA WB\s*$")).first.click()
    frame = page.frame_locator("#lorawb-frame")
    frame.get_by_text(LORA_NAME).first.wait_for(timeout=120_000)
    # the host's own scripts may throw (Forge: setupAllResizeHandles is not defined); none of ours may
    ours = [e for e in page.page_errors if "lorawb" in e]
    assert not ours, ours
