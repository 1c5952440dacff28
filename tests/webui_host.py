"""A real AUTOMATIC1111 (v1.10.1) or Forge server for the real-host tests, started from a checkout the user fetched
(never one of ours) with that host's own venv, on CPU, on 127.0.0.1 only.

Everything the run writes lives under a temporary data dir (``--data-dir``: settings, extensions, the lorawb
library): this checkout is linked into its ``extensions/`` folder, so the host loads the pack from here and its
checkout is not changed. The checkpoint (tests/sd15_checkpoint.py) and the LoRA folder are passed by
``--ckpt-dir``/``--lora-dir``. Offline: ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` are set, A1111's text encoder is
read from the folder the checkpoint's yaml names, Forge's from the configs it ships.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"emphasis": "No norm"}  # the tiny text encoder's zero biases make "Original" divide by a zero mean
COMMON_ARGS = ["--skip-prepare-environment", "--skip-install", "--skip-torch-cuda-test", "--skip-version-check",
               "--skip-python-version-check", "--no-download-sd-model", "--no-hashing", "--api"]
CPU_ARGS = {"a1111": ["--use-cpu", "all", "--no-half"], "forge": ["--always-cpu", "--all-in-fp32"]}
#: (environment variable naming the checkout, the one naming the venv's python, a file only that host has)
HOSTS = {"a1111": ("A1111_DIR", "A1111_PYTHON", "extensions-builtin/Lora/networks.py"),
         "forge": ("FORGE_DIR", "FORGE_PYTHON", "extensions-builtin/sd_forge_lora/networks.py")}


class HostError(RuntimeError):
    """The host did not start or answered with an error (the message carries its log's tail)."""


def configured(kind: str, environ=os.environ) -> tuple[Path, Path] | str:
    """(checkout, python) from the environment, or why this host cannot run."""
    dir_var, py_var, marker = HOSTS[kind]
    if not environ.get(dir_var):
        return f"{dir_var} is not set (the {kind} checkout; run: bash .ci/a1111-host)"
    if not environ.get(py_var):
        return f"{py_var} is not set (the python of {kind}'s venv; run: bash .ci/a1111-host)"
    path, python = Path(environ[dir_var]), Path(environ[py_var])
    if not (path / "launch.py").is_file() or not (path / marker).is_file():
        raise HostError(f"{dir_var}={path} is not a {kind} checkout (launch.py and {marker} expected)")
    if not python.is_file():
        raise HostError(f"{py_var}={python} does not exist")
    return path, python


@dataclass
class Generated:
    """One generation: the first image's pixels (RGB bytes), its parameters text, the full info, the PNG."""

    pixels: bytes
    infotext: str
    info: dict = field(repr=False)
    png: bytes = field(default=b"", repr=False)


@dataclass
class WebuiHost:
    kind: str
    path: Path
    python: Path
    workdir: Path
    port: int
    ckpt_dir: Path
    lora_dir: Path
    startup_seconds: float = 0.0
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "host.log"

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def start(self, checkpoint_name: str, timeout: float = 900) -> None:
        data = self.workdir / "data"
        (data / "extensions").mkdir(parents=True, exist_ok=True)
        link = data / "extensions" / "lorawb"
        if not link.exists():
            link.symlink_to(ROOT, target_is_directory=True)
        (data / "config.json").write_text(json.dumps({**SETTINGS, "sd_model_checkpoint": checkpoint_name}))
        args = [str(self.python), "launch.py", *COMMON_ARGS, *CPU_ARGS[self.kind], "--port", str(self.port),
                "--data-dir", str(data), "--ckpt-dir", str(self.ckpt_dir), "--lora-dir", str(self.lora_dir)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        env.pop("PYTHONPATH", None)  # the host imports the pack from its extensions folder, nothing else of ours
        started = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(args, cwd=self.path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise HostError(f"{self.kind} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:  # the host's API first, then ours (registered by on_app_started, just after)
                self.get("/sdapi/v1/sd-models", timeout=5)
                self.get("/lorawb/info", timeout=5)
                self.startup_seconds = time.monotonic() - started
                return
            except (OSError, HostError):
                time.sleep(1)
        raise HostError(f"{self.kind} did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    # ---- HTTP -----------------------------------------------------------------------------------------------------
    def request(self, method: str, path: str, body=None, timeout: float = 900) -> tuple[int, object]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw, ctype = resp.status, resp.read(), resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            status, raw, ctype = exc.code, exc.read(), exc.headers.get("Content-Type", "")
        return status, (json.loads(raw) if "json" in ctype else raw.decode(errors="replace"))

    def get(self, path: str, timeout: float = 60):
        status, body = self.request("GET", path, timeout=timeout)
        if status != 200:
            raise HostError(f"GET {path}: {status} {body}")
        return body

    def generate(self, prompt: str, *, seed: int = 1, init_image: bytes | None = None) -> tuple[int, object]:
        """The raw answer of ``/sdapi/v1/txt2img`` (64×64, 2 Euler steps, CFG 5, fixed seed), or of
        ``/sdapi/v1/img2img`` from ``init_image`` (PNG bytes, denoising 0.6) with the same settings."""
        body = {"prompt": prompt, "negative_prompt": "", "width": 64, "height": 64, "steps": 2, "seed": seed,
                "sampler_name": "Euler", "scheduler": "automatic", "cfg_scale": 5, "batch_size": 1, "n_iter": 1}
        if init_image is None:
            return self.request("POST", "/sdapi/v1/txt2img", body)
        body.update(init_images=[base64.b64encode(init_image).decode()], denoising_strength=0.6)
        return self.request("POST", "/sdapi/v1/img2img", body)

    def txt2img(self, prompt: str, *, seed: int = 1, init_image: bytes | None = None) -> Generated:
        """The first image's pixels and parameters (img2img when ``init_image`` is given)."""
        from PIL import Image

        status, body = self.generate(prompt, seed=seed, init_image=init_image)
        if status != 200:
            raise HostError(f"generating {prompt!r}: {status} {body}\n{self.log_tail(15)}")
        info = json.loads(body["info"])
        png = base64.b64decode(body["images"][0])
        image = Image.open(io.BytesIO(png)).convert("RGB")
        return Generated(pixels=image.tobytes(), infotext=info["infotexts"][0], info=info, png=png)

    def wait_for_scan(self, timeout: float = 300) -> list[dict]:
        """The library's LoRAs once the start-up scan is done."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.get("/lorawb/scan")
            if not status.get("running") and status.get("state") not in ("running", "queued"):
                loras = self.get("/lorawb/loras")["items"]
                if loras:
                    return loras
            time.sleep(1)
        raise HostError(f"the library scan did not finish within {timeout:.0f} s:\n{self.log_tail(15)}")
