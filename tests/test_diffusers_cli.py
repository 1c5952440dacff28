"""``lorawb generate`` on a tiny SD 1.5 pipeline saved with ``save_pretrained`` and a real library of LoRAs."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("peft")

from diffusers_tiny import tiny_sd15, write_lora  # noqa: E402

from lorawb_core.cli import main  # noqa: E402

PAST = 1_700_000_000 * 10**9


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from lorawb_core.library import open_library, scan

    base = tmp_path_factory.mktemp("gen")
    tiny_sd15().save_pretrained(base / "pipe")
    root = base / "loras"
    files = [write_lora("sd15", root / "characters", "hero", seed=1), write_lora("sd15", root / "styles", "ink", seed=2),
             write_lora("sdxl", root / "styles", "xl", seed=3)]
    for f in files:
        os.utime(f, ns=(PAST, PAST))
    db_path = str(base / "library.sqlite3")
    with open_library(db_path) as db:
        scan(db, [str(root)])
        ids = {r[1]: r[0] for r in db.execute("SELECT stable_id, name FROM loras")}
    return {"pipe": str(base / "pipe"), "db": db_path, "ids": ids, "files": files, "out": base}


def _run(setup, *args):
    return main(["generate", "--pipeline", setup["pipe"], "--db", setup["db"], "--prompt", "a red cube", "--steps",
                 "2", "--size", "16x16", "--seed", "5", *args])


def _png(path):
    from PIL import Image

    im = Image.open(path)
    return np.asarray(im.convert("RGB")), json.loads(im.info["lorawb"])


def test_generate_by_stable_id_is_diffusers_own_image(setup, capsys):
    from diffusers import DiffusionPipeline

    hero = setup["ids"]["hero"]
    out = setup["out"] / "one.png"
    assert _run(setup, "--lora", f"{hero}:0.7", "--out", str(out)) == 0
    assert f"{hero} ×0.7" in capsys.readouterr().out
    ours, info = _png(out)
    assert info["runs"][0]["applied"]["loras"][0]["stable_id"] == hero
    pipe = DiffusionPipeline.from_pretrained(setup["pipe"], local_files_only=True)
    pipe.load_lora_weights(str(setup["files"][0]), adapter_name="x")
    pipe.set_adapters(["x"], adapter_weights=[0.7])
    theirs = pipe("a red cube", num_inference_steps=2, height=16, width=16,
                  generator=torch.Generator().manual_seed(5)).images[0]
    np.testing.assert_array_equal(ours, np.asarray(theirs.convert("RGB")))


def test_variants_make_a_labelled_sheet(setup, capsys):
    hero, ink = setup["ids"]["hero"], setup["ids"]["ink"]
    out = setup["out"] / "ab.png"
    assert _run(setup, "--lora", f"{hero}:0.8", "--lora", ink, "--variants", "profile=ALL,OUTD", "--out",
                str(out)) == 0
    text = capsys.readouterr().out
    assert "profile=ALL:" in text and "profile=OUTD:" in text
    sheet, info = _png(out)
    assert sheet.shape[1] == 32 and sheet.shape[0] > 16
    assert [r["label"] for r in info["runs"]] == ["profile=ALL", "profile=OUTD"]
    assert info["runs"][1]["applied"]["loras"][0]["weights"]["OUT03"] == 1.0
    assert info["runs"][1]["applied"]["loras"][0]["weights"]["IN04"] == 0.0
    left, right = sheet[sheet.shape[0] - 16:, :16], sheet[sheet.shape[0] - 16:, 16:]
    assert np.abs(left.astype(int) - right.astype(int)).max() > 0


def test_errors_and_fallback(setup, capsys, tmp_path):
    out = str(tmp_path / "x.png")
    assert _run(setup, "--lora", "SD1-CHR-099", "--out", out) == 1
    assert "SD1-CHR-099" in capsys.readouterr().err and not os.path.exists(out)
    assert _run(setup, "--lora", setup["ids"]["xl"], "--out", out) == 1
    err = capsys.readouterr().err
    assert "refused" in err and "sdxl LoRA" in err and "sd15" in err
    assert _run(setup, "--lora", "SD1-CHR-099", "--fallback", "--out", out) == 0
    assert "fallback" in capsys.readouterr().out and os.path.exists(out)
    assert main(["generate", "--pipeline", str(tmp_path), "--prompt", "x", "--out", out]) == 1
    assert "cannot load a diffusers pipeline" in capsys.readouterr().err
    assert _run(setup, "--steps", "100000", "--out", out) == 1
    assert "'steps' must be between" in capsys.readouterr().err


def test_serve_refuses_a_pipeline_that_does_not_load(tmp_path, capsys):
    assert main(["serve", "--pipeline", str(tmp_path), "--db", str(tmp_path / "l.sqlite3"), "--no-scan"]) == 2
    assert "cannot load a diffusers pipeline" in capsys.readouterr().err


def test_real_server_generates(setup, tmp_path):
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "lorawb_core", "serve", "--pipeline", setup["pipe"], "--db",
                             setup["db"], "--no-scan", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/lorawb/generate"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    assert json.load(r)["family"] == "sd15"
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode()[-2000:]
                time.sleep(0.5)
        body = json.dumps({"prompt": "a red cube", "steps": 2, "width": 16, "height": 16, "seed": 5,
                           "brand_id": "hero", "lora_weights": 0.7}).encode()
        req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            assert r.headers["Content-Type"] == "image/png"
            (tmp_path / "served.png").write_bytes(r.read())
        served, info = _png(tmp_path / "served.png")
        assert info["runs"][0]["applied"]["loras"][0]["stable_id"] == setup["ids"]["hero"]
        assert served.shape == (16, 16, 3)
    finally:
        proc.terminate()
        proc.wait(30)
