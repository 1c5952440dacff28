"""Block-weight profiles: named maps block id → multiplier for one layout of the registry.

>>> parse_weights("INS", layout_id="sd15_unet_17").profile.vector()[:5]
[1.0, 1.0, 1.0, 1.0, 0.0]
>>> convert_profile(builtin_profiles("sd15_unet_17")[3], "sd15_unet_26").filled[:3]
['IN00', 'IN03', 'IN06']

Weights are finite and within [WEIGHT_MIN, WEIGHT_MAX]; a profile converts only within its family (view ↔ full
layout), blocks the source lacks taking ``fill`` (0, the LBW rule). Importing this package never imports ComfyUI.
"""

from __future__ import annotations

from ..errors import ProfileError, ProfileMismatch, ProfileNotFound
from ..skipped import Skipped
from .import_export import DIALECTS, export_profiles, import_profiles
from .model import WEIGHT_MAX, WEIGHT_MIN, Conversion, Profile, ProfileStats, convert_profile, validate_weights
from .parse import ParsedWeights, parse_weights
from .positional import ImportReport
from .presets import builtin_profiles
from .store import (
    create_profile,
    delete_profile,
    duplicate_profile,
    get_profile,
    get_profile_by_id,
    list_profiles,
    update_profile,
)

__all__ = ["DIALECTS", "WEIGHT_MAX", "WEIGHT_MIN", "Conversion", "ImportReport", "ParsedWeights", "Profile",
           "ProfileError", "ProfileMismatch", "ProfileNotFound", "ProfileStats", "Skipped", "builtin_profiles",
           "convert_profile", "create_profile", "delete_profile", "duplicate_profile", "export_profiles",
           "get_profile", "get_profile_by_id", "import_profiles", "list_profiles", "parse_weights",
           "update_profile", "validate_weights"]
