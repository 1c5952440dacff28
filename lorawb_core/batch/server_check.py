"""Checking a workflow against what a ComfyUI server has (its ``GET /object_info``), before anything is queued.

:func:`workflow_problems` lists every node class the server lacks, every required input missing and every choice
(checkpoint, clip, vae, sampler, scheduler …) that is not among the server's options; :func:`check_workflow` raises
:class:`~lorawb_core.errors.ServerMismatch` naming them and what the server offers instead. :func:`get_object_info`
is the small aiohttp GET that fetches the dict.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..errors import ServerMismatch, ServerUnreachable

# inputs whose value is checked by the node itself (VALIDATE_INPUTS), not against the combo list
SELF_VALIDATED = {("LoraWB_LoadLoraById", "lora"), ("LoraWB_BlockWeightApply", "lora")}
SHOW_OPTIONS = 12


def combo_options(spec: Any) -> list[Any] | None:
    """The choices of an input spec from ``/object_info``, or None when it is not a choice list. Both spellings:
    ``[["a", "b"], {...}]`` (older ComfyUI) and ``["COMBO", {"options": ["a", "b"]}]`` (current)."""
    if not isinstance(spec, list | tuple) or not spec:
        return None
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        return list(spec[1].get("options") or [])
    return None


def _shown(options: list[Any]) -> str:
    head = ", ".join(map(str, options[:SHOW_OPTIONS]))
    more = f" … ({len(options)} in all)" if len(options) > SHOW_OPTIONS else ""
    return (head + more) if options else "none"


def workflow_problems(workflow: dict[str, Any], object_info: dict[str, Any]) -> list[str]:
    """One sentence per thing in ``workflow`` the server described by ``object_info`` would refuse."""
    problems: list[str] = []
    for node_id, node in workflow.items():
        class_type = node.get("class_type")
        info = object_info.get(class_type)
        if info is None:
            hint = (" (install the lorawb node pack on that server)" if str(class_type).startswith("LoraWB_")
                    else " (update ComfyUI or install the node pack that provides it)")
            problems.append(f"node {node_id}: the server has no {class_type} node{hint}.")
            continue
        spec = info.get("input") or {}
        inputs = node.get("inputs") or {}
        for name, input_spec in (spec.get("required") or {}).items():
            if name not in inputs:
                problems.append(f"node {node_id} ({class_type}): the required input {name!r} is not set.")
                continue
            _check_choice(problems, node_id, class_type, name, inputs[name], input_spec)
        for name, input_spec in (spec.get("optional") or {}).items():
            if name in inputs:
                _check_choice(problems, node_id, class_type, name, inputs[name], input_spec)
    return problems


def _check_choice(problems: list[str], node_id: str, class_type: str, name: str, value: Any, spec: Any) -> None:
    if isinstance(value, list) or (class_type, name) in SELF_VALIDATED:  # a link, or checked by the node
        return
    options = combo_options(spec)
    if options is not None and value not in options:
        problems.append(f"node {node_id} ({class_type}): {name} {value!r} is not on the server; it has: "
                        f"{_shown(options)}.")


def check_workflow(workflow: dict[str, Any], object_info: dict[str, Any], server: str = "the server") -> None:
    """Raise :class:`ServerMismatch` listing every problem of :func:`workflow_problems` (nothing when it fits)."""
    problems = workflow_problems(workflow, object_info)
    if problems:
        raise ServerMismatch(f"{server} cannot run this workflow: " + " ".join(problems) +
                             " Set the names in preview_config.json or on the command line (--checkpoint …).")


def model_names(object_info: dict[str, Any], class_type: str = "CheckpointLoaderSimple",
                input_name: str = "ckpt_name") -> list[str]:
    """The model files a loader offers on the server (e.g. its checkpoints), for settings dialogs."""
    spec = ((object_info.get(class_type) or {}).get("input") or {}).get("required", {}).get(input_name)
    return [str(v) for v in combo_options(spec) or []]


async def fetch_object_info(server: str, *, timeout: float = 30.0) -> dict[str, Any]:
    """``GET {server}/object_info`` with aiohttp."""
    import aiohttp

    url = server.rstrip("/") + "/object_info"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async with session.get(url) as resp:
                if resp.status != 200:
                    raise ServerUnreachable(f"{url} answered HTTP {resp.status}; is it a ComfyUI server?")
                data = await resp.json(content_type=None)
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        raise ServerUnreachable(f"Cannot read {url} ({type(exc).__name__}: {exc}); start ComfyUI there or pass "
                                "another --server.") from None
    if not isinstance(data, dict):
        raise ServerUnreachable(f"{url} did not answer with a JSON object; is it a ComfyUI server?")
    return data


def get_object_info(server: str, *, timeout: float = 30.0) -> dict[str, Any]:
    """:func:`fetch_object_info` for synchronous callers (the CLI, the planners' checks)."""
    return asyncio.run(fetch_object_info(server, timeout=timeout))
