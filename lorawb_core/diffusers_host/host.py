"""LoRAs by stable ID, with exact per-block weights, on a diffusers pipeline.

>>> host = DiffusersHost(pipe, db=open_library())                         # doctest: +SKIP
>>> applied = host.apply([LoraSpec("SDX-STY-004", 0.8, weights="OUTD")])  # doctest: +SKIP
>>> image = pipe("a lighthouse", generator=torch.Generator().manual_seed(1)).images[0]   # doctest: +SKIP
>>> host.unload()                                                          # doctest: +SKIP

Each apply runs the stack through the compose gate (a refused stack raises :class:`IncompatibleStack` with the gate's
reasons), reads each file through the shared LoRA cache, pre-scales each module by its block weight
(:mod:`.scaling`), and loads the result with diffusers' own ``load_lora_weights``; ``set_adapters`` then sets the
strengths (denoiser ``strength``, text encoders ``strength_clip``). With uniform weights the state dict diffusers gets
is the file's own, so the output is diffusers' own. ``fuse=True`` merges the adapters into the weights (diffusers'
``fuse_lora``) after saving a copy of every weight it changes; unloading puts those copies back, so the base weights
are bit-for-bit what they were. diffusers and peft are imported only when a pipeline is used.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import IncompatibleStack, LoraMissing, LorawbError, NotInLibrary, UnreadableFile, UsageError
from .scaling import module_facts, plan_scale_keys, scaled_state_dict
from .stack import LoraSpec, resolve_lora

DENOISERS = ("unet", "transformer")
_FAMILY_BY_CLASS = (("StableDiffusionXL", "sdxl"), ("StableDiffusion3", "sd3"), ("Flux2", None), ("Flux", "flux"),
                    ("Wan", "wan"), ("HunyuanVideo", "hunyuan_video"))
SUPPORTED = "SD 1.x, SD 2.x, SDXL, SD3/3.5, Flux.1, WAN 2.x and HunyuanVideo pipelines"


def pipeline_family(pipe) -> str:
    """Our family code for a diffusers pipeline (from its class, and the UNet's context width for SD 1.x/2.x)."""
    name = type(pipe).__name__
    for prefix, family in _FAMILY_BY_CLASS:
        if name.startswith(prefix):
            if family is None:
                break
            if family == "sdxl" and getattr(pipe, "text_encoder", None) is None:
                return "sdxl_refiner"
            return family
    else:
        if name.startswith("StableDiffusion") and getattr(pipe, "unet", None) is not None:
            width = pipe.unet.config.cross_attention_dim
            if width in (768, 1024):
                return "sd15" if width == 768 else "sd2"
    raise UsageError(f"{name}: lorawb has no block layout for this pipeline; it supports {SUPPORTED}.")


@dataclass
class AppliedLora:
    """One LoRA as it went onto the pipeline."""

    lora: str
    stable_id: str | None
    name: str | None
    path: str
    strength: float
    strength_clip: float
    weights_source: str
    weights: dict[str, float]  # the blocks the LoRA touches, with their weights
    components: list[str]  # pipeline components diffusers loaded it into
    adapter: str
    notes: list[str] = field(default_factory=list)


@dataclass
class Applied:
    """What :meth:`DiffusersHost.apply` did: the LoRAs on the pipeline, the ones left out by ``fallback``."""

    family: str
    loras: list[AppliedLora]
    fused: bool = False
    fallback: list[str] = field(default_factory=list)  # one sentence per LoRA left out (missing/unknown)
    warnings: list[str] = field(default_factory=list)

    @property
    def base_only(self) -> bool:
        return not self.loras

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["base_only"] = self.base_only
        return d


class DiffusersHost:
    """One pipeline and the LoRAs on it. Not re-entrant: one apply → generate → unload at a time (the generation
    service serialises requests per pipeline); a new :meth:`apply` first unloads the previous stack."""

    def __init__(self, pipe, *, db=None, cache=None, family: str | None = None, allow_paths: bool = True) -> None:
        from ..cache import default_cache

        self.pipe = pipe
        self.db = db
        self.cache = cache if cache is not None else default_cache()
        self.family = family or pipeline_family(pipe)
        self.allow_paths = allow_paths  # False for remote callers: LoRAs only by stable ID or library name
        self.applied: Applied | None = None
        self._backup: list[tuple[Any, str, Any]] = []  # (module, param name, original tensor) for fused weights
        self._gate_memo: OrderedDict[tuple, Any] = OrderedDict()  # stack key -> the gate's (accepting) verdict
        self._loading = False  # adapters may be on the pipeline (set before the first load_lora_weights)
        self._lock = threading.RLock()

    # ---- apply / unload ----------------------------------------------------------------------------------------
    def apply(self, specs: list[LoraSpec], *, fuse: bool = False, fallback: bool = False) -> Applied:
        """Put ``specs`` on the pipeline (after unloading what was there).

        Args:
            fuse: merge into the weights (faster sampling; unload restores the saved originals exactly).
            fallback: a LoRA that is unknown or whose file is gone is left out (said in ``Applied.fallback``)
                instead of raising; with every LoRA missing the pipeline runs as the base model.
        Raises:
            NotInLibrary, LoraMissing: a LoRA cannot be found (without ``fallback``).
            IncompatibleStack: the compose gate refused the stack (its reasons are the message).
        """
        with self._lock:
            self.unload()
            resolved, left_out = self._resolve(specs, fallback)
            applied = Applied(self.family, [], fuse, left_out)
            if not resolved:
                self.applied = applied
                return applied
            reports, warnings = self._gate(resolved)
            applied.warnings = warnings
            self._loading = True
            try:
                for n, (spec, entry, rep) in enumerate(zip([s for s, _ in resolved], [e for _, e in resolved],
                                                           reports, strict=True)):
                    applied.loras.append(self._load(n, spec, entry, rep))
                self._set_strengths(applied.loras)
                if fuse:
                    self._fuse(applied.loras)
            except BaseException:
                self.applied = applied
                self.unload()
                raise
            self.applied = applied
            return applied

    def unload(self) -> None:
        """Take every LoRA off; fused weights get their saved originals back (exact)."""
        with self._lock:
            if self.applied is None:
                return
            import torch

            if self.applied.loras or self._loading:
                self.pipe.unload_lora_weights()
            self._loading = False
            with torch.no_grad():
                for module, pname, original in self._backup:
                    getattr(module, pname).copy_(original)
            self._backup = []
            self.applied = None

    # ---- steps ---------------------------------------------------------------------------------------------------
    def _resolve(self, specs, fallback):
        resolved, left_out = [], []
        for spec in specs:
            try:
                resolved.append((spec, resolve_lora(self.db, spec.lora, allow_paths=self.allow_paths)))
            except (NotInLibrary, LoraMissing, UnreadableFile) as exc:
                if not fallback:
                    raise
                left_out.append(f"{spec.lora}: {exc} Generated without it (fallback).")
        return resolved, left_out

    def _gate(self, resolved):
        """The compose gate's verdict for the stack (memoised per files, strengths and weights)."""
        from ..cache import LoraCache
        from ..compose import StackEntry, check_stack

        key = tuple((LoraCache.key_for(e.path), s.strength, s.clip, s.weights) for s, e in resolved)
        memo = self._gate_memo.get(key)
        if memo is None:
            entries = {s.lora: e for s, e in resolved}
            stack = [StackEntry(s.lora, s.strength, s.clip, ("text", s.weights) if s.weights else None)
                     for s, _ in resolved]
            verdict = check_stack(self.db, stack, model_family=self.family, directions=False,
                                  resolve=entries.__getitem__)
            if not verdict.ok:
                raise IncompatibleStack(f"the compose gate refused the stack for this {self.family} pipeline: "
                                        + "; ".join(verdict.reasons))
            memo = self._gate_memo[key] = verdict
            while len(self._gate_memo) > 64:
                self._gate_memo.popitem(last=False)
        self._gate_memo.move_to_end(key)
        return memo.entries, list(memo.warnings)

    def _load(self, n: int, spec: LoraSpec, entry, rep) -> AppliedLora:
        from ..inspection import inspect_structure

        sd = self.cache.get(entry.path)
        facts = _facts_memo(entry.path, inspect_structure)
        weights = rep.weights or {}
        plan = plan_scale_keys(facts, weights)
        adapter = f"lorawb_{n}"
        try:
            self.pipe.load_lora_weights(scaled_state_dict(sd, plan), adapter_name=adapter)
        except LorawbError:
            raise
        except (ValueError, KeyError, RuntimeError, TypeError) as exc:
            raise UsageError(f"diffusers could not load {spec.lora} ({entry.path}) into this "
                             f"{type(self.pipe).__name__}: {exc}") from exc
        comps = [c for c, names in self.pipe.get_list_adapters().items() if adapter in names]
        touched = sorted({b for _, b, _, _ in facts.values() if b})
        notes = list(rep.notes)
        if not comps:
            notes.append("diffusers loaded none of its modules into this pipeline")
        return AppliedLora(spec.lora, entry.stable_id, entry.name, entry.path, spec.strength, spec.clip,
                           rep.weights_source, {b: weights.get(b, 0.0) for b in touched}, comps, adapter, notes)

    def _set_strengths(self, loras: list[AppliedLora]) -> None:
        names = [a.adapter for a in loras]
        weights = [{c: (a.strength if c in DENOISERS else a.strength_clip) for c in a.components} for a in loras]
        if names:
            self.pipe.set_adapters(names, adapter_weights=weights)

    def _fuse(self, loras: list[AppliedLora]) -> None:
        from peft.tuners.tuners_utils import BaseTunerLayer

        comps = sorted({c for a in loras for c in a.components})
        for c in comps:
            for module in getattr(self.pipe, c).modules():
                if isinstance(module, BaseTunerLayer):
                    base = module.get_base_layer()
                    for pname in ("weight", "bias"):
                        t = getattr(base, pname, None)
                        if t is not None:
                            self._backup.append((base, pname, t.detach().clone()))
        self.pipe.fuse_lora(components=comps, lora_scale=1.0, adapter_names=[a.adapter for a in loras])
        self.pipe.unload_lora_weights()  # the merged weights stay; the adapter layers go


_FACTS: OrderedDict[Any, dict] = OrderedDict()
_FACTS_LOCK = threading.Lock()


def _facts_memo(path: str, inspect_structure) -> dict:
    """Module facts of a file, memoised per (path, mtime, size)."""
    from ..cache import LoraCache

    key = LoraCache.key_for(path)
    with _FACTS_LOCK:
        if key in _FACTS:
            _FACTS.move_to_end(key)
            return _FACTS[key]
    facts = module_facts(inspect_structure(path))
    with _FACTS_LOCK:
        _FACTS[key] = facts
        while len(_FACTS) > 256:
            _FACTS.popitem(last=False)
    return facts

