"""What the running A1111/Forge offers, found by looking (never by version string), and the library service over its
LoRA folders.

The LoRA machinery is the built-in Lora extension's ``networks`` module (A1111: ``extensions-builtin/Lora``; Forge:
``extensions-builtin/sd_forge_lora``), which the host has imported before any user extension:

* A1111: ``networks.load_network`` builds a ``Network`` whose ``modules`` are applied by ``network_apply_weights``
  through each module's ``multiplier()`` — per-block strength = a per-module multiplier;
* Forge: ``networks.load_lora_for_models`` and the checkpoint's ``forge_objects`` (``ModelPatcher.add_patches``) —
  per-block strength = one ``add_patches`` call per distinct strength.

Anything else gets one line at start naming what is missing, and the tag refuses to run.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path

from lorawb_core.errors import HostUnsupported

log = logging.getLogger("lorawb")
EXTENSION_DIR = str(Path(__file__).resolve().parents[1])
A1111_NEEDS = ("load_network", "loaded_networks", "network_apply_weights", "available_networks")
FORGE_NEEDS = ("load_lora_for_models", "load_lora_state_dict", "loaded_networks")


def _networks_module():
    return sys.modules.get("networks")


def missing_features() -> str | None:
    """None when a supported LoRA machinery is present, else one sentence naming what is missing."""
    networks = _networks_module()
    if networks is None:
        return ("lorawb: this A1111/Forge has no built-in Lora extension loaded (module 'networks' from "
                "extensions-builtin/Lora or sd_forge_lora); enable it, or <lorawb:…> tags cannot be applied.")
    if all(hasattr(networks, n) for n in A1111_NEEDS):
        module_cls = getattr(sys.modules.get("network"), "NetworkModule", None)
        if module_cls is not None and callable(getattr(module_cls, "multiplier", None)):
            return None
        return ("lorawb: the built-in Lora extension has no network.NetworkModule.multiplier(); this A1111 is not "
                "supported for <lorawb:…> tags.")
    if all(hasattr(networks, n) for n in FORGE_NEEDS):
        return None
    absent = sorted({n for n in (*A1111_NEEDS, *FORGE_NEEDS) if not hasattr(networks, n)})
    return ("lorawb: the built-in Lora extension of this host lacks " + ", ".join(f"networks.{n}" for n in absent)
            + "; <lorawb:…> tags cannot be applied on it (the library, routes and tab still work).")


def lora_machinery():
    """The applier for this host (:class:`.a1111_networks.A1111Networks` or :class:`.forge_networks.ForgeNetworks`).

    Raises:
        HostUnsupported: neither machinery is present (the message names what is missing).
    """
    problem = missing_features()
    if problem:
        raise HostUnsupported(problem)
    networks = _networks_module()
    if hasattr(networks, "network_apply_weights"):
        from .a1111_networks import A1111Networks

        return A1111Networks(networks, sys.modules["network"])
    from .forge_networks import ForgeNetworks

    return ForgeNetworks(networks)


def model_family(sd_model) -> str | None:
    """The registry family of the loaded checkpoint (None when the host does not say; then it is not checked)."""
    if sd_model is None:
        return None
    for attr, family in (("is_sdxl", "sdxl"), ("is_sd3", "sd3"), ("is_sd2", "sd2"), ("is_sd1", "sd15")):
        if getattr(sd_model, attr, False):
            return family
    if type(sd_model).__name__ == "Flux":  # Forge's Flux engine has no is_* flag of its own
        return "flux"
    return None


def lora_roots(cmd_opts) -> list[str]:
    """A1111's LoRA folders: ``--lora-dir`` (default ``models/Lora``) and the LyCORIS back-compat folder if present."""
    roots = []
    for attr in ("lora_dir", "lyco_dir_backcompat"):
        path = getattr(cmd_opts, attr, None)
        if path and os.path.isdir(path) and os.path.abspath(path) not in roots:
            roots.append(os.path.abspath(path))
    return roots


def listen_hosts(cmd_opts) -> list[str]:
    """The addresses the host serves on: ``--listen`` is every interface, ``--server-name`` one name."""
    if getattr(cmd_opts, "listen", False):
        return ["0.0.0.0"]
    name = getattr(cmd_opts, "server_name", None)
    return [name] if name else ["127.0.0.1"]


def db_path(data_path: str) -> Path:
    """``LORAWB_DB`` when set, else ``<A1111 data dir>/lorawb/library.sqlite3``."""
    explicit = os.environ.get("LORAWB_DB")
    return Path(explicit) if explicit else Path(data_path) / "lorawb" / "library.sqlite3"


def ensure_importable() -> None:
    """Put the extension folder on ``sys.path`` (A1111 takes it off again after importing the script file), so the
    scan's spawned worker processes can import ``lorawb_core``."""
    if EXTENSION_DIR not in sys.path:
        sys.path.append(EXTENSION_DIR)


class Library:
    """The one library service of this process (created on first use; the background scan starts once)."""

    _lock = threading.Lock()
    _service = None
    _hub = None

    @classmethod
    def service(cls):
        from modules import paths_internal, shared  # type: ignore[import-not-found]

        from lorawb_core.server.events import EventHub
        from lorawb_core.service import LibraryService

        with cls._lock:
            if cls._service is None:
                ensure_importable()
                cls._hub = EventHub()
                cls._service = LibraryService(db_path(paths_internal.data_path),
                                              lambda: lora_roots(shared.cmd_opts), emit=cls._hub.emit)
                cls._hub.hello = lambda: {"scan": cls._service.scan_status()}
            return cls._service

    @classmethod
    def hub(cls):
        cls.service()
        return cls._hub

    @classmethod
    def start_scan(cls) -> None:
        svc = cls.service()
        if not svc.roots():
            log.warning("lorawb: no LoRA folder to scan (--lora-dir does not exist yet).")
            return
        svc.start_scan()
