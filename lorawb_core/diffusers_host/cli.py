"""``lorawb generate``: one image (or an A/B sheet) from a diffusers pipeline with library LoRAs.

    lorawb generate --pipeline DIR --lora ID[:S][@WEIGHTS]… --prompt TEXT [--negative TEXT] [--steps N]
                    [--size WxH] [--seed S] [--cfg G] [--variants strength=0.4,0.8|profile=ALL,OUTD]
                    [--fuse] [--fallback] [--db FILE] [--json] --out FILE.png
"""

from __future__ import annotations

import argparse
import os
import tempfile


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate with a diffusers pipeline and library LoRAs (exact block weights)")
    p.add_argument("--pipeline", required=True, help="a diffusers pipeline folder (save_pretrained), or a Hub id "
                                                     "already in your cache")
    p.add_argument("--lora", action="append", default=[], metavar="ID[:S][@WEIGHTS]",
                   help="a stable ID, LoRA name or .safetensors path, with a strength and block weights in any "
                        "dialect (repeatable: a stack)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative", help="negative prompt (pipelines that take one)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--size", metavar="WxH", help="image size, multiples of 8 (default: the pipeline's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cfg", type=float, help="guidance scale (default: the pipeline's)")
    p.add_argument("--variants", help="A/B: strength=0.4,0.8 or profile=ALL,OUTD (one labelled image per value)")
    p.add_argument("--fuse", action="store_true", help="fuse the LoRAs into the weights (restored exactly after)")
    p.add_argument("--fallback", action="store_true", help="a missing LoRA is left out (said so) instead of an error")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], help="load the pipeline in this dtype")
    p.add_argument("--db", help="library database for stable IDs (default: LORAWB_DB, or the per-user data dir)")
    p.add_argument("--json", action="store_true", help="print what was applied as JSON")
    p.add_argument("--out", required=True, help="where to write the PNG")
    p.set_defaults(func=cmd_generate)


def _size(text: str | None) -> tuple[int | None, int | None]:
    if not text:
        return None, None
    w, sep, h = text.lower().partition("x")
    try:
        return int(w), int(h)
    except ValueError:
        from ..errors import InvalidValue

        raise InvalidValue(f"--size {text!r}: write WIDTHxHEIGHT, e.g. 512x768.", field="size") from None


def _open_db(path: str | None):
    """The library when one exists (stable IDs need it); None when only paths are used and none exists."""
    from ..library import default_db_path, open_library

    target = path or default_db_path()
    if path is None and not os.path.exists(target):
        return None
    return open_library(target)


def cmd_generate(args: argparse.Namespace, out) -> int:
    from ..torch_check import require_torch
    from .generate import GenerationRequest, generate, load_pipeline, png_bytes, side_by_side
    from .host import DiffusersHost
    from .stack import LoraSpec

    require_torch("lorawb generate")
    width, height = _size(args.size)
    body = {"prompt": args.prompt, "negative": args.negative, "steps": args.steps, "width": width,
            "height": height, "seed": args.seed, "cfg": args.cfg, "variants": args.variants,
            "fallback": args.fallback, "fuse": args.fuse,
            "loras": [{"lora": s.lora, "strength": s.strength, "weights": s.weights}
                      for s in map(LoraSpec.parse, args.lora)]}
    req = GenerationRequest.from_dict({k: v for k, v in body.items() if v is not None})
    pipe = load_pipeline(args.pipeline, dtype=args.dtype)
    pipe.set_progress_bar_config(disable=True)
    db = _open_db(args.db)
    try:
        host = DiffusersHost(pipe, db=db)
        results = generate(host, req)
    finally:
        if db is not None:
            db.close()
    image = results[0].image if len(results) == 1 else side_by_side(results)
    info = {"pipeline": args.pipeline, "family": host.family, "seed": req.seed, "steps": req.steps,
            "runs": [{"label": r.label, "applied": r.applied} for r in results]}
    _write_atomic(args.out, png_bytes(image, info))
    if args.json:
        out.json(info)
    else:
        for r in results:
            applied = r.applied
            head = f"{r.label}: " if r.label else ""
            loras = ", ".join(f"{a['stable_id'] or a['name']} ×{a['strength']:g} ({a['weights_source']})"
                              for a in applied["loras"]) or "base model only"
            out.line(f"{head}{loras}")
            for line in applied["fallback"] + applied["warnings"]:
                out.line(f"  ! {line}")
        out.line(f"wrote {args.out} ({image.width}×{image.height})")
    return 0


def _write_atomic(path: str, data: bytes) -> None:
    target = os.path.abspath(path)
    fd, tmp = tempfile.mkstemp(prefix=".lorawb-", suffix=".png", dir=os.path.dirname(target))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
