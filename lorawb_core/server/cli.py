"""``lorawb serve``: the library panel and HTTP API without ComfyUI.

    lorawb serve [--root DIR]… [--db FILE] [--host 127.0.0.1] [--port 8189] [--no-scan]

Serves the routes of :mod:`.routes`, the page at ``/lorawb/ui`` and events at ``/lorawb/events``; scans the roots in
the background at start (unless ``--no-scan``). On a host other than loopback it refuses to start unless
``LORAWB_TOKEN`` is set: changes then need that token in the ``X-Lorawb-Token`` header.
"""

from __future__ import annotations

import argparse
import os

from ..errors import LorawbError

DEFAULT_PORT = 8189


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the library panel (/lorawb/ui) and the HTTP API without ComfyUI")
    p.add_argument("--root", action="append", dest="roots", metavar="DIR",
                   help="a LoRA folder to index (repeatable; default: the config file's roots, else ComfyUI's)")
    p.add_argument("--db", help="library database (default: LORAWB_DB, else the per-user data directory)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; any other needs "
                                                       "LORAWB_TOKEN)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--no-scan", action="store_true", help="do not scan the roots at start (POST /lorawb/scan does)")
    p.add_argument("--pipeline", help="a diffusers pipeline folder (or cached Hub id): adds POST /lorawb/generate")
    p.add_argument("--queue", type=int, default=4, help="requests that may wait for the pipeline (default 4; more "
                                                       "get 429)")
    p.set_defaults(func=cmd_serve)


def _roots(args: argparse.Namespace, config) -> list[str]:
    from ..library.config import comfy_lora_roots

    if args.roots:
        return [os.path.abspath(os.path.expanduser(r)) for r in args.roots]
    return list(config.roots) or comfy_lora_roots()


def cmd_serve(args: argparse.Namespace, out) -> int:
    import logging

    from aiohttp import web

    from ..library.config import load_config
    from ..service import LibraryService
    from ..torch_check import INSTALL_TORCH, torch_available
    from .app import create_app
    from .events import EventHub
    from .http import TOKEN_ENV, Security, is_loopback_host

    security = Security.for_hosts([args.host])
    if security.remote and not security.token:
        out.error(f"lorawb serve: refusing to listen on {args.host} (beyond localhost) without a token: set "
                  f"{TOKEN_ENV} to a long random string (changes must then send it in the X-Lorawb-Token header), "
                  "or listen on 127.0.0.1.")
        return 2
    config = load_config()
    roots = _roots(args, config)
    hub = EventHub()
    service = LibraryService(args.db, roots, emit=hub.emit, categories=config.categories,
                             scan_options={"ledger": config.ledger})
    app = create_app(service, hub=hub, security=security, scan_on_start=bool(roots) and not args.no_scan)
    if args.pipeline:
        from ..diffusers_host.server import add_generation

        try:
            add_generation(app, args.pipeline, service, security=security, queue_size=args.queue)
        except LorawbError as exc:
            out.error(f"lorawb serve: {exc}")
            return 2
        out.line(f"  pipeline: {args.pipeline} → POST /lorawb/generate")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    host = f"[{args.host}]" if ":" in args.host else args.host
    out.line(f"lorawb serve: library {service.db_path}")
    out.line("  roots: " + (", ".join(roots) if roots else "none (pass --root DIR to index a folder)"))
    if not torch_available():
        out.line(f"  PyTorch is not installed: scans read headers only, blocks and hashes stay pending ({INSTALL_TORCH})")
    out.line(f"  panel: http://{host}:{args.port}/lorawb/ui" + ("" if is_loopback_host(args.host) else
                                                                 f"   (changes need {TOKEN_ENV})"))
    try:
        web.run_app(app, host=args.host, port=args.port, print=None, access_log=None, shutdown_timeout=5)
    except OSError as exc:
        out.error(f"lorawb serve: cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); pick another "
                  "--port.")
        return 1
    return 0
