"""Helpers for the route, service and browser tests: a real library of real-format files, ``lorawb serve`` in a
subprocess, Debian's Chromium through Playwright."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from library_helpers import quick_scan, tiny, tiny_library

from lorawb_core.library.db import open_library

ROOT = Path(__file__).resolve().parents[1]
XSS_TITLE = "<img src=x onerror=alert(1)>"
XSS_TRIGGER = "<script>alert(2)</script>"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def route_library(base: Path) -> dict:
    """A library under ``base/lib`` indexed into ``base/db/library.sqlite3``: 14 ready LoRAs over 4 families, an
    XSS fixture (HTML in its title and trigger word), a content duplicate, an unreadable file and a pending LoRA.

    Returns ``{"lib", "db", "ids": {file_name: stable_id}}``.
    """
    lib, db_path = base / "lib", base / "db" / "library.sqlite3"
    files = tiny_library(lib, per_folder=2)
    tiny(lib / "concepts" / "xss_title.safetensors", "sd15", 99, metadata={
        "ss_output_name": XSS_TITLE, "modelspec.title": XSS_TITLE,
        "ss_tag_frequency": json.dumps({"10_xss": {XSS_TRIGGER: 12, "1girl": 3}})})
    (lib / "dupes").mkdir()
    shutil.copy2(files[0], lib / "dupes" / "copy_of_first.safetensors")
    broken = lib / "broken" / "not_a_lora.safetensors"
    broken.parent.mkdir()
    broken.write_text("this is not a safetensors file")
    os.utime(broken, ns=(time.time_ns() - 3600 * 10**9,) * 2)
    db = open_library(db_path)
    try:
        quick_scan(db, [lib])
        tiny(lib / "new" / "pending_flux.safetensors", "flux", 77)
        quick_scan(db, [lib], structure_only=True)
        ids = {r["file_name"]: r["stable_id"] for r in db.query("SELECT file_name, stable_id FROM loras")}
    finally:
        db.close()
    return {"lib": lib, "db": db_path, "ids": ids}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url: str, method: str = "GET", body: dict | None = None, headers: dict | None = None):
    """(status, parsed JSON body) of a request; errors are returned, not raised."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


class ServeProcess:
    """``lorawb serve`` in a subprocess on a free loopback port; ``url`` is its origin."""

    def __init__(self, db: Path, roots: list[Path], *, extra: list[str] | None = None,
                 env: dict | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "lorawb_core", "serve", "--db", str(db), "--port", str(self.port)]
        for r in roots:
            cmd += ["--root", str(r)]
        Path(db).parent.mkdir(parents=True, exist_ok=True)
        self.log = Path(db).parent / f"serve-{self.port}.log"
        self._log = open(self.log, "wb")
        self.proc = subprocess.Popen(cmd + (extra or []), cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lorawb serve exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                status, _ = http_json(self.url + "/lorawb/info")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"lorawb serve did not answer in {timeout} s:\n{self.log.read_text()}")

    def wait_scan(self, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _, status = http_json(self.url + "/lorawb/scan")
            if status["state"] in ("done", "error", "idle"):
                return status
            time.sleep(0.1)
        raise RuntimeError("the scan did not finish")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()

    def __enter__(self) -> ServeProcess:
        self.wait_ready()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


async def call(client, method, path, status, body=None):
    """One request to an aiohttp test client: the JSON answer, after checking the status."""
    resp = await client.request(method, path, json=body)
    data = await resp.json()
    assert resp.status == status, (method, path, resp.status, data)
    return data
