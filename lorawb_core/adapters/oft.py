"""OFT (block-diagonal rotations, LyCORIS diag-OFT and kohya OFT) and BOFT (butterfly products).

W' = R·W; ΔW = (R − I)·W needs the base weight. The adapter-only figure is ‖Q‖ of the skew generators stored in
the file (how far from identity the rotations are).
"""

from __future__ import annotations

from typing import ClassVar

from .base import Adapter, Energy, Getter


class OftAdapter(Adapter):
    name: ClassVar[str] = "oft"
    needs_base: ClassVar[bool] = True
    figure: ClassVar[str] = "‖generator‖ (the rotation acts on the base weight)"

    @classmethod
    def consumed(cls) -> tuple[str, ...]:
        return ("oft_blocks", "oft_diag", "oft_r", "rescale")

    @classmethod
    def claims(cls, params) -> bool:
        key = cls._block_key(params)
        return key is not None and len(params[key].shape) != 4

    @staticmethod
    def _block_key(params) -> str | None:
        for k in ("oft_blocks", "oft_diag", "oft_r"):
            if k in params:
                return k
        return None

    def inspect_shapes(self) -> None:
        shape = self.shape_of(self._block_key(self.params) or "")
        self.rank = shape[0] if shape else None  # number of blocks
        if len(shape) >= 2:
            self.target_shape = (shape[0] * shape[-1],)

    def scale(self) -> float:
        return 1.0

    def energy(self, get: Getter) -> Energy:
        blocks = get(self._block_key(self.params) or "")
        b = blocks.double()
        if b.dim() >= 3 and b.shape[-1] == b.shape[-2]:
            b = b - b.transpose(-1, -2)  # LyCORIS/kohya build Q = B − Bᵀ
        return Energy(energy=float(b.pow(2).sum()), exact=False)

    def delta(self, get: Getter):
        raise NotImplementedError("OFT rotates the base weight (ΔW = (R−I)·W); apply it through the host.")


class BoftAdapter(OftAdapter):
    name: ClassVar[str] = "boft"

    @classmethod
    def claims(cls, params) -> bool:
        return "oft_blocks" in params and len(params["oft_blocks"].shape) == 4

    def inspect_shapes(self) -> None:
        m, n, bs, _ = self.shape_of("oft_blocks")
        self.rank = m
        self.target_shape = (n * bs,)
