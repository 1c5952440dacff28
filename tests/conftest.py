"""Shared test helpers: tiny LoRA files written in code into tmp_path (no committed blobs)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import pytest_asyncio
from skip_policy import (  # noqa: F401 - the skip policy's hooks, registered by being here
    pytest_runtest_logreport,
    pytest_sessionfinish,
    pytest_terminal_summary,
)

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # appended: the pack's ``nodes`` package must never shadow ComfyUI's ``nodes``
    sys.path.append(str(ROOT))


def save(path: Path, tensors: dict, metadata: dict | None = None) -> Path:
    """Write torch tensors as safetensors (float16 unless a tensor says otherwise)."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


@pytest.fixture
def write(tmp_path):
    def _write(name: str, tensors: dict, metadata: dict | None = None) -> Path:
        return save(tmp_path / name, tensors, metadata)

    return _write


@pytest_asyncio.fixture
async def client(aiohttp_client, service):
    """An aiohttp test client on a bare app with every lorawb route; the test module supplies ``service``."""
    from aiohttp import web

    from lorawb_core.server.http import Security
    from lorawb_core.server.routes import register_routes

    app = web.Application()
    register_routes(app, service, security=Security())
    return await aiohttp_client(app)



@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a module (dense reference math: OpenMP teams crawl when the CI cores are shared)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
