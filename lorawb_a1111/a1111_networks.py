"""Planned LoRAs applied through A1111's built-in Lora extension (``extensions-builtin/Lora``), exactly.

Each LoRA is loaded by the host's own ``networks.load_network`` (its module types, key matching and weight math) into
a ``Network`` of our own, appended to ``networks.loaded_networks`` after the host's ``<lora:…>`` networks. Per-block
strength is a per-module multiplier: A1111 computes a module's delta as ``updown · calc_scale() · multiplier()``, and
``multiplier()`` is the network's ``te_multiplier`` or ``unet_multiplier``; ours returns that times the module's
block weight (from the layout registry, by the file key the module came from). Block weight 1 everywhere gives the
same numbers as ``<lora:name:S>``; 0 everywhere adds exact zeros.

A1111 re-patches a layer only when ``(name, te, unet, dyn_dim)`` of the loaded networks change, so the network's name
carries a digest of the block weights and of LBW's start/stop state: any change re-patches.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass

from lorawb_core.apply import block_of_file_key
from lorawb_core.layouts import REST
from lorawb_core.tag_plan import PlannedLora, TagPlan

CACHE_SIZE = 8


@dataclass
class _Applied:
    planned: PlannedLora
    net: object
    active: bool = True


def _digest(planned: PlannedLora, active: bool) -> str:
    text = repr((sorted(planned.weights.items()), planned.tag.start, planned.tag.stop, active))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class A1111Networks:
    """The A1111 applier: :meth:`apply` after the host's extra networks are active, :meth:`on_step` each step."""

    host = "A1111 built-in Lora (per-module multipliers)"

    def __init__(self, networks, network) -> None:
        self.networks = networks
        self.network = network
        self._cache: OrderedDict[str, tuple[tuple, object]] = OrderedDict()
        self.applied: list[_Applied] = []

    def _load(self, planned: PlannedLora):
        """The file as the host loads it for the current checkpoint (its modules point at that model's layers)."""
        from modules import shared  # type: ignore[import-not-found]

        key = (planned.path, os.stat(planned.path).st_mtime_ns, id(shared.sd_model))
        hit = self._cache.get(planned.path)
        if hit is not None and hit[0] == key:
            self._cache.move_to_end(planned.path)
            return hit[1]
        on_disk = self.network.NetworkOnDisk(f"lorawb-{planned.stable_id}", planned.path)
        net = self.networks.load_network(on_disk.name, on_disk)
        self._cache[planned.path] = (key, net)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return net

    def apply(self, plan: TagPlan, step: int | None = None) -> list[str]:
        """Add the plan's networks to the host's loaded ones; returns notes for the log (modules outside blocks)."""
        self.applied = []
        notes = []
        for planned in plan.loras:
            net = self._load(planned)
            if not net.modules:
                notes.append(f"{planned.stable_id}: no module of this LoRA matches the loaded checkpoint.")
            item = _Applied(planned, net)
            for module in net.modules.values():
                block = block_of_file_key(module.network_key, planned.family, planned.layout_id)
                weight = planned.weights.get(block, 0.0) if block else planned.weights.get(REST, 1.0)
                module.multiplier = _multiplier(module, weight, item)
            net.te_multiplier = planned.tag.te_strength
            net.unet_multiplier = planned.tag.unet_strength
            net.dyn_dim = None
            net.mentioned_name = planned.tag.ref
            item.active = _active(planned, step)
            net.name = f"lorawb:{planned.stable_id}:{_digest(planned, item.active)}"
            self.networks.loaded_networks.append(net)
            self.applied.append(item)
        return notes

    def on_step(self, step: int) -> None:
        """LBW's start=/stop=: the UNet part of a LoRA is active for steps ``start ≤ step < stop``."""
        for item in self.applied:
            active = _active(item.planned, step)
            if active != item.active:
                item.active = active
                item.net.name = f"lorawb:{item.planned.stable_id}:{_digest(item.planned, active)}"


def _active(planned: PlannedLora, step: int | None) -> bool:
    if step is None:
        step = 0
    start, stop = planned.tag.start, planned.tag.stop
    return (start is None or step >= start) and (stop is None or step < stop)


def _multiplier(module, weight: float, item: _Applied):
    """A1111's ``NetworkModule.multiplier`` times the block weight (and 0 for the UNet outside start/stop)."""
    is_te = "transformer" in module.sd_key[:20]  # A1111's own test for a text-encoder module

    def multiplier() -> float:
        net = module.network
        if is_te:
            return net.te_multiplier * weight
        return net.unet_multiplier * weight * (1.0 if item.active else 0.0)

    return multiplier
