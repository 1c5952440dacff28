"""What an inspection reports: the module, block and file dataclasses, the structure phase's summary, and the sentence
for a file that cannot be applied."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import BrokenLora
from ..family_detect import FamilyGuess
from ..hashes import Hashes
from ..metadata import LoraMetadata

SCHEMA_VERSION = 1
NO_MODULES = "no LoRA modules found"


@dataclass
class ModuleReport:
    key: str  # module key as written in the file
    target: str  # canonical ComfyUI key (with [start:end] when it is a row slice of a fused weight)
    component: str  # unet | te | te1 | te2 | te3
    block: str | None  # block id in the family's full layout; None = unmapped
    algorithm: str
    rank: int | None
    alpha: float | None
    scale: float
    shape: list[int]  # shape of the weight it patches
    tensor_keys: list[str]
    norm: float | None = None  # ‖scale·ΔW‖_F (or the adapter-only figure when exact is False)
    exact: bool = True
    figure: str = "‖scale·ΔW‖_F"
    effective_rank: float | None = None
    nonfinite: bool = False
    problems: list[str] = field(default_factory=list)


@dataclass
class BlockStrength:
    id: str
    label: str
    group: str
    norm: float  # root of the summed squared module norms
    share: float  # share of the LoRA's total energy (0..1)
    module_count: int
    max_module: str | None = None
    max_norm: float = 0.0
    exact: bool = True  # False when a module's figure is adapter-only (DoRA, OFT, …)


@dataclass
class LoraReport:
    path: str
    file_name: str
    size: int
    mtime_ns: int
    header_bytes: int  # where tensor data starts (the addnet hash covers the rest)
    format: str
    formats: dict[str, int]
    family: FamilyGuess
    layout_id: str | None
    full_layout_id: str | None
    algorithms: dict[str, int]
    rank: int | None
    ranks: list[int]
    alpha: float | None
    modules: list[ModuleReport]
    unmapped: list[str]
    unknown_keys: list[str]
    metadata: LoraMetadata
    needs_base: bool
    blocks: list[BlockStrength] | None = None
    total_norm: float | None = None
    unmapped_norm: float | None = None
    hashes: Hashes | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def trigger_words(self) -> list[str]:
        return [t.word for t in self.metadata.trigger_words]

    @property
    def module_count(self) -> int:
        return len(self.modules)

    def to_dict(self, *, modules: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "schema": SCHEMA_VERSION, "path": self.path, "file_name": self.file_name, "size": self.size,
            "format": self.format, "formats": self.formats, "family": self.family.to_dict(),
            "layout": self.layout_id, "full_layout": self.full_layout_id, "algorithms": self.algorithms,
            "rank": self.rank, "ranks": self.ranks, "alpha": self.alpha, "needs_base": self.needs_base,
            "module_count": len(self.modules), "unmapped": self.unmapped, "unknown_keys": self.unknown_keys,
            "trigger_words": self.trigger_words, "metadata": self.metadata.to_dict(),
            "blocks": [asdict(b) for b in self.blocks] if self.blocks is not None else None,
            "blocks_state": "ready" if self.blocks is not None else "pending",
            "total_norm": self.total_norm, "unmapped_norm": self.unmapped_norm,
            "hashes": self.hashes.to_dict() if self.hashes else None, "problems": self.problems,
        }
        if modules:
            d["modules"] = [asdict(m) for m in self.modules]
        return d



@dataclass
class StructureSummary:
    """What the library's structure phase writes (``file_tasks.structure_fields``), from the header alone.

    The same figures as :func:`inspect_structure`'s report (``module_count`` = ``len(report.modules)``), except
    ``alpha``: the alpha scalars lie between the tensors, one read each, so they are not read here (``alpha`` is
    None, and problems of alpha values are not listed); the library takes both from phase (b), which reads the
    tensors anyway. Everything that depends only on the tensor index is computed once per distinct index.
    """

    path: str
    size: int
    mtime_ns: int
    header_bytes: int
    format: str
    family: FamilyGuess
    layout_id: str | None
    full_layout_id: str | None
    algorithms: dict[str, int]
    rank: int | None
    module_count: int
    metadata: LoraMetadata
    needs_base: bool
    problems: list[str]
    alpha: float | None = None

    @property
    def trigger_words(self) -> list[str]:
        return [t.word for t in self.metadata.trigger_words]



def broken_reason(problems: list[str], shown: int = 3) -> str:
    """One sentence for a file whose ``problems`` keep it from being applied (every problem a report lists does:
    NaN/Inf values, factor shapes that do not multiply, rank-0 factors, a non-finite alpha, no LoRA modules)."""
    listed = "; ".join(problems[:shown]) + (f"; and {len(problems) - shown} more" if len(problems) > shown else "")
    if len(problems) == 1 and problems[0].startswith(NO_MODULES):
        return (f"cannot be applied: {listed}. It is not a LoRA lorawb can read (an embedding, a checkpoint or an "
                "unknown format): keep it out of the LoRA folders, or report the format if it is a LoRA.")
    return (f"cannot be applied: {listed}. The file is damaged or was saved wrongly: download or export it again "
            "(lorawb inspect --blocks lists every problem).")


def check_applicable(report: LoraReport) -> None:
    """Raise :class:`BrokenLora` (with the report) when the report lists any problem."""
    if report.problems:
        raise BrokenLora(f"{report.path}: {broken_reason(report.problems)}", report)
