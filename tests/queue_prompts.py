"""Prompts for the batch-queue tests and bench: no model needed (``EmptyImage`` → ``ImageBlur`` → ``SaveImage``), one
colour per prompt so a server's ``/history`` tells how often each was submitted."""

from __future__ import annotations

from ui_helpers import http_json


def image_workflow(n: int, *, size: int = 64, blur: int = 0, passes: int = 1, bad: bool = False) -> dict:
    """A prompt whose output (node ``"9"``) is an image of colour ``n``. ``blur`` > 0 adds ``passes`` chained
    ``ImageBlur`` nodes of that radius (they keep the server busy without a larger image to send back); ``bad``
    wires the SaveImage to a node that does not exist (ComfyUI rejects the prompt with node_errors)."""
    wf: dict = {"1": {"class_type": "EmptyImage", "inputs": {"width": size, "height": size, "batch_size": 1,
                                                             "color": n}}}
    src = "1"
    for i in range(passes if blur else 0):
        node = str(20 + i)
        wf[node] = {"class_type": "ImageBlur", "inputs": {"image": [src, 0], "blur_radius": blur, "sigma": 5.0}}
        src = node
    wf["9"] = {"class_type": "SaveImage", "inputs": {"images": ["404" if bad else src, 0],
                                                     "filename_prefix": "lorawb_queue_test"}}
    return wf


def history(url: str) -> dict:
    status, body = http_json(url + "/history")
    assert status == 200, body
    return body


def colors_run(url: str) -> list[int]:
    """The ``EmptyImage`` colour of every prompt in the server's history (one entry per prompt it ran)."""
    return [entry["prompt"][2]["1"]["inputs"]["color"] for entry in history(url).values()]
