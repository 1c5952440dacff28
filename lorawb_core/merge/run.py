"""merge_loras: a stack of LoRAs (with strengths and block weights) into one new kohya-format LoRA file."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from typing import Any

from ..errors import InvalidTensor, UsageError
from .dora import BaseModel, dora_delta
from .factors import lowrank_factors
from .lowrank import RankRule, decompose
from .plan import MergeInput, ModuleGroup, Source, check_rank, group_modules, load_sources
from .report import MergeReport, ModuleMerge
from .writer import DTYPES, build_metadata, check_output, write_safetensors

Progress = Callable[[int, int, str], None]  # (done, total, module key)


def _finite(t, src: Source, module: str, param: str) -> None:
    import torch

    # a float32 sum is finite exactly when every value is (NaN and ±Inf propagate; finite fp16 values cannot add up
    # to an overflow) and runs ~8× faster than isfinite(t).all() on fp16; a non-finite sum is confirmed element-wise
    if not math.isfinite(float(t.float().sum())) and not bool(torch.isfinite(t).all()):
        raise InvalidTensor(f"{src.title} ({src.path}): module {module} holds NaN or Inf values in '{param}'; "
                            "the file is damaged: leave it out of the merge.")


def _terms(group: ModuleGroup, loaders: dict[int, Any], base=None):
    """(low-rank (U, D) pairs, dense terms, carried tensors) of one module, coefficients and scales folded in.

    Carried tensors are summed exactly and written as they are, under the name ComfyUI loads them by: bias deltas
    (``diff_b``, and PEFT's ``lora_B.bias`` times the module's scale), norm-layer diffs (``w_norm``/``b_norm``) and
    full diffs of 1-D weights (``diff``).
    """
    m, n = group.matrix
    lowrank, dense, carried = [], [], {}

    def carry(name: str, t) -> None:
        carried[name] = carried[name] + t if name in carried else t

    for src, mod in group.parts:
        a = mod.adapter
        loader = loaders[src.index]

        def get(param, a=a, loader=loader, src=src):
            t = loader.get(a.params[param].key)
            _finite(t, src, a.module, param)
            return t

        c = src.coefficient(mod)
        if c == 0:
            continue
        a.check_valid()
        if "diff_b" in a.params:
            carry("diff_b", c * get("diff_b").double())
        if "up_bias" in a.params:
            carry("diff_b", (c * a.scale()) * get("up_bias").double())
        if a.decomposed:  # only reaches here with a base model: the gate refuses DoRA otherwise
            w = base.weight(group.target, mod.raw.path, (m, n))
            dense.append(dora_delta(a, get, w, m, n) * c)
            continue
        if a.name == "norm":
            for param in ("w_norm", "b_norm"):
                if param in a.params:
                    carry(param, c * get(param).double())
            continue
        if a.name == "full" and "diff" in a.params and len(group.shape) == 1:
            carry("diff", c * get("diff").double())
            continue
        pair = lowrank_factors(a, get, m, n) if a.name != "full" else None
        if pair is not None:
            lowrank.append((pair[0] * c, pair[1]))
        elif a.name != "full" or "diff" in a.params:
            dense.append(a.delta(get).reshape(m, n) * c)
    return lowrank, dense, carried


def _alpha(group: ModuleGroup, k: int, alpha_mode: str) -> float:
    if alpha_mode == "input":
        alphas = {mod.adapter.alpha for _, mod in group.parts}
        if len(alphas) == 1 and None not in alphas:
            return float(alphas.pop())
    return float(k)


def _write_module(out: dict, group: ModuleGroup, up, down, alpha: float, dtype) -> None:
    import torch

    k = up.shape[1]
    root = math.sqrt(k / alpha)  # stored factors carry sqrt(rank/alpha) each: (alpha/rank)·up·down = ΔW
    up, down = up * root, down * root
    if len(group.shape) == 4:
        up = up.reshape(group.shape[0], k, 1, 1)
        down = down.reshape(k, *group.shape[1:])
    out[f"{group.key}.lora_up.weight"] = _stored(up, dtype, group.key)
    out[f"{group.key}.lora_down.weight"] = _stored(down, dtype, group.key)
    out[f"{group.key}.alpha"] = torch.tensor(alpha, dtype=dtype)


def _stored(t, dtype, key: str):
    """``t`` in the output dtype, refused when it overflows there."""
    import torch

    t = t.to(dtype)
    if not bool(torch.isfinite(t).all()):
        raise UsageError(f"module {key} does not fit {dtype}: its values overflow; save with --dtype fp32 or bf16.")
    return t.contiguous()


def _ordered_map(fn, items, workers: int, ahead: int = 4):
    """``fn`` over ``items`` on ``workers`` threads, yielded in order, at most ``workers + ahead`` in flight (the
    results wait for the consumer, so the window bounds their memory). Inline with one worker."""
    if workers <= 1:
        yield from map(fn, items)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers, thread_name_prefix="lorawb-merge") as pool:
        window: deque = deque()
        try:
            for item in items:
                window.append(pool.submit(fn, item))
                if len(window) >= workers + ahead:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()
        finally:  # an error (or a consumer that stopped): nothing more starts
            for f in window:
                f.cancel()


def _cancel_on_error(futures: list):
    """An ExitStack exit callback: cancel ``futures`` not yet started when the block raised (never suppresses)."""
    def exit_(exc_type, exc, tb) -> bool:
        if exc_type is not None:
            for f in futures:
                f.cancel()
        return False
    return exit_


_RELEASE_EVERY = 32  # modules between drops of the inputs' read pages (a drop costs one madvise per input)


@contextmanager
def _one_thread():
    """Run the per-module factorisations on one thread: they are small (m×R QRs, R×R SVDs), and OpenMP's thread
    team costs 50-100× more than the work when the cores are busy (measured: a 11520×8 QR 1 ms vs 53 ms)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _sha256(src: Source) -> str | None:
    if src.sha256:
        return src.sha256
    from ..hashes import hash_file

    return hash_file(src.path, src.analysis.report.header_bytes).sha256


def merge_loras(items: list[MergeInput | str], out_path: str | os.PathLike[str], *, rule: RankRule | None = None,
                dtype: str = "fp16", alpha: str = "rank", metadata: str = "merge", db=None,
                progress: Progress | None = None, index: bool = True, title: str | None = None,
                base: str | os.PathLike[str] | None = None) -> MergeReport:
    """Merge ``items`` into the new file ``out_path`` and return the report.

    Args:
        items: the stack (``MergeInput`` or ``"ID_OR_PATH[:S][@WEIGHTS]"`` strings).
        rule: rank rule (default: concat, lossless).
        dtype: fp16 | bf16 | fp32 storage.
        alpha: ``rank`` (alpha = rank, scale 1) or ``input`` (each module keeps the inputs' common alpha).
        metadata: new | merge | first (see :func:`.writer.build_metadata`).
        db: an open library: stable IDs resolve through it and the new file is indexed at once (its stable ID
            is in the report).
        base: the base model (.safetensors) to bake a single DoRA file with (see :mod:`.dora`); needs a rank
            rule (the baked delta is full rank).

    Raises:
        IncompatibleStack, InvalidTensor, UsageError, OutputExists: nothing is written.
    """
    import torch

    started = time.monotonic()
    rule = rule or RankRule()
    if dtype not in DTYPES:
        raise UsageError(f"dtype {dtype!r} is unknown; use one of {', '.join(DTYPES)}.")
    if alpha not in ("rank", "input"):
        raise UsageError(f"alpha {alpha!r} is unknown; use 'rank' (alpha = rank) or 'input' (the inputs' alpha).")
    torch_dtype = getattr(torch, DTYPES[dtype][0])
    path = check_output(out_path)
    items = [MergeInput.parse(i) if isinstance(i, str) else i for i in items]
    if base is not None and rule.concat:
        raise UsageError("baking DoRA needs a target rank (--rank R or a dynamic --sv-fro F): its effective ΔW "
                         "depends on the base weight and is full rank, so concat would store whole matrices.")
    sources = load_sources(db, items, base=base is not None)
    groups = group_modules(sources)
    check_rank(rule, groups)
    family = sources[0].analysis.report.family.family
    tensors: dict[str, Any] = {}
    modules: list[ModuleMerge] = []
    alphas: set[float] = set()
    from concurrent.futures import ThreadPoolExecutor

    from ..tensors import open_tensors

    # the inputs' SHA256 (for the metadata; known already for library LoRAs) stream beside the merge: hashlib runs
    # without the GIL, in the gaps the per-module Python leaves
    hasher = ThreadPoolExecutor(1, thread_name_prefix="lorawb-merge-hash")
    sha256 = {s.index: hasher.submit(_sha256, s) for s in sources}
    hasher.shutdown(wait=False)
    with ExitStack() as stack, torch.no_grad(), _one_thread():
        stack.push(_cancel_on_error(list(sha256.values())))  # a failed merge hashes nothing more
        # module by module: the inputs are mapped without faulting them in and their pages are dropped as the merge
        # goes, so resident memory holds the output and a few modules, not every input file
        loaders = {s.index: stack.enter_context(open_tensors(s.analysis.structure, populate=False)) for s in sources}
        base_model = BaseModel(base) if base is not None else None

        def merged(g: ModuleGroup):
            lowrank, dense, carried = _terms(g, loaders, base_model)
            return carried, (decompose(lowrank, dense, g.matrix, rule, conv=g.conv) if lowrank or dense else None)

        # modules are independent: two run at once (torch releases the GIL in its kernels; each runs on one thread),
        # in order, at most a few ahead of the writer (the base model's reader is not shared across threads)
        workers = 1 if base_model is not None else max(1, min(2, os.cpu_count() or 1))
        for i, (g, (carried, d)) in enumerate(zip(groups, _ordered_map(merged, groups, workers), strict=True)):
            for name, t in carried.items():
                tensors[f"{g.key}.{name}"] = _stored(t, torch_dtype, g.key)
            if carried and d is None:
                energy = sum(float(t.pow(2).sum()) for t in carried.values())
                modules.append(ModuleMerge(g.key, g.target, g.block, len(g.parts), 0, 0, energy, energy, False))
            if d is not None:
                energy = d.energy
                k = d.kept if energy > 0 else 0
                if k:
                    a = _alpha(g, k, alpha)
                    alphas.add(a)
                    _write_module(tensors, g, d.up[:, :k], d.down[:k], a, torch_dtype)
                modules.append(ModuleMerge(g.key, g.target, g.block, len(g.parts), d.available, k, energy,
                                           d.kept_energy if k else energy, d.dense))
            if i % _RELEASE_EVERY == _RELEASE_EVERY - 1:
                for loader in loaders.values():
                    loader.release()
            if progress:
                progress(i + 1, len(groups), g.key)
    if not any(m.rank or m.energy for m in modules):
        raise UsageError("the merged LoRA is empty: every module's strength or block weight is 0.")
    ranks = {m.rank for m in modules if m.rank}
    dims = (str(ranks.pop()) if len(ranks) == 1 else "Dynamic",
            f"{next(iter(alphas)):g}" if len(alphas) == 1 else "Dynamic")
    source_info = [{"index": s.index, "stable_id": s.stable_id, "name": s.name, "sha256": sha256[s.index].result(),
                    "strength_model": s.item.strength_model, "strength_clip": s.strength_clip,
                    "weights": s.item.weights, "weights_source": s.weights_source,
                    "weights_by_block": s.weights if s.weights_source != "uniform" else None} for s in sources]
    info = {"tool": "lorawb merge", "mode": rule.label, "dtype": dtype, "alpha": alpha,
            **({"dora_baked_with": os.path.basename(os.fspath(base))} if base is not None else {}),
            "sources": [{k: v for k, v in d.items() if k != "index"} for d in source_info]}
    title = title or path.stem
    meta = build_metadata(sources, mode=metadata, dims=dims, title=title, merge_info=info, family=family)
    write_safetensors(path, tensors, meta)
    rep = sources[0].analysis.report
    report = MergeReport(str(path), rule.label, dtype, family, rep.full_layout_id, source_info, modules,
                         notes=[f"{s.title}: {n}" for s in sources for n in s.notes])
    from ..hashes import hash_file_two_threads
    from ..reader import read_structure

    report.hashes = hash_file_two_threads(path, read_structure(path).header_bytes).to_dict()
    report.size = path.stat().st_size
    if db is not None and index:
        from .library import index_new_file

        report.stable_id = index_new_file(db, path)
    report.seconds = time.monotonic() - started
    return report

