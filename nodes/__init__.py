"""ComfyUI adapters: thin V1 node classes over lorawb_core (ids prefixed ``LoraWB_``, one category root).

Node ids and input names are part of saved workflows: never rename them without a migration.
"""

from __future__ import annotations

from .info_node import LoraInfo
from .lora_nodes import BlockWeightApply, LoadLoraById, ProfileSelect
from .merge_node import SaveMergedLora
from .schedule_nodes import ApplyHooksToConditioning, BlockSchedule
from .stack_nodes import LoraStack, MultiLoraCompose

NODE_CLASS_MAPPINGS: dict[str, type] = {
    "LoraWB_LoadLoraById": LoadLoraById,
    "LoraWB_BlockWeightApply": BlockWeightApply,
    "LoraWB_ProfileSelect": ProfileSelect,
    "LoraWB_LoraStack": LoraStack,
    "LoraWB_MultiLoraCompose": MultiLoraCompose,
    "LoraWB_LoraInfo": LoraInfo,
    "LoraWB_BlockSchedule": BlockSchedule,
    "LoraWB_ApplyHooksToConditioning": ApplyHooksToConditioning,
    "LoraWB_SaveMergedLora": SaveMergedLora,
}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "LoraWB_LoadLoraById": "Load LoRA by stable_id",
    "LoraWB_BlockWeightApply": "Block Weight Apply",
    "LoraWB_ProfileSelect": "Profile Select",
    "LoraWB_LoraStack": "LoRA Stack",
    "LoraWB_MultiLoraCompose": "Multi-LoRA Compose",
    "LoraWB_LoraInfo": "LoRA Info",
    "LoraWB_BlockSchedule": "Block Schedule",
    "LoraWB_ApplyHooksToConditioning": "Apply Hooks to Conditioning",
    "LoraWB_SaveMergedLora": "Save Merged LoRA",
}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
