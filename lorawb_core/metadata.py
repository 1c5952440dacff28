"""Training metadata: kohya ``ss_*``, SAI ``modelspec.*`` and PEFT adapter configs, parsed into plain data.

All safetensors metadata values are strings; JSON-valued ones are parsed a second time. Values are untrusted
(shown in a browser later): this module keeps them as text and never interprets markup.
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from .strict_json import finite_json

_JSON_KEYS = ("ss_tag_frequency", "ss_network_args", "lora_adapter_metadata")  # the JSON values we use, no others
MAX_JSON_CHARS = 1 << 20  # a JSON value above this is not decoded whole (one file must stay cheap to index) …
TAG_SCAN_CHARS = 1 << 18  # … a huge ss_tag_frequency is read from its first TAG_SCAN_CHARS characters only
_PHRASE_SPLIT = re.compile(r"[,\n]").split
_DATASET_FOLDER = re.compile(r"^\d+_(.+)$").match  # kohya's <repeats>_<name>
_TAG_COUNT = re.compile(r'"((?:[^"\\]|\\.){1,200})"\s*:\s*(\d{1,9})\s*[,}]')
_FOLDER = re.compile(r'"((?:[^"\\]|\\.){1,300})"\s*:\s*\{')
_INT_KEYS = {"ss_steps": "steps", "ss_epoch": "epoch", "ss_num_epochs": "epochs", "ss_max_train_steps": "max_steps",
             "ss_num_train_images": "images", "ss_clip_skip": "clip_skip", "ss_seed": "seed",
             "ss_num_reg_images": "reg_images", "ss_batch_size_per_device": "batch_size"}
_FLOAT_KEYS = {"ss_learning_rate": "learning_rate", "ss_unet_lr": "unet_lr", "ss_text_encoder_lr": "text_encoder_lr",
               "ss_noise_offset": "noise_offset", "ss_network_dim": "network_dim", "ss_network_alpha": "network_alpha",
               "ss_training_started_at": "started_at", "ss_training_finished_at": "finished_at"}
_TEXT_KEYS = {"ss_optimizer": "optimizer", "ss_resolution": "resolution", "ss_mixed_precision": "mixed_precision",
              "ss_sd_model_name": "base_model_name", "ss_new_sd_model_hash": "base_model_sha256",
              "ss_sd_model_hash": "base_model_hash", "ss_network_module": "network_module",
              "ss_base_model_version": "base_model_version", "ss_vae_name": "vae_name", "ss_lr_scheduler": "lr_scheduler",
              "modelspec.resolution": "resolution", "modelspec.prediction_type": "prediction_type"}
# Tags that are never trigger words: quality/booru boilerplate.
_COMMON_TAGS = {"1girl", "1boy", "solo", "looking at viewer", "smile", "simple background", "white background",
                "masterpiece", "best quality", "high quality", "highres", "absurdres", "open mouth", "blush",
                "long hair", "short hair", "upper body", "full body", "standing", "outdoors", "indoors", "2girls",
                "multiple girls", "no humans", "realistic", "photorealistic"}


@dataclass
class TriggerWord:
    word: str
    source: str  # modelspec | output_name | tag_frequency
    count: int = 0
    share: float = 0.0  # fraction of training images carrying the tag


@dataclass
class TrainingFacts:
    steps: int | None = None
    epoch: int | None = None
    epochs: int | None = None
    max_steps: int | None = None
    images: int | None = None
    reg_images: int | None = None
    batch_size: int | None = None
    clip_skip: int | None = None
    seed: int | None = None
    learning_rate: float | None = None
    unet_lr: float | None = None
    text_encoder_lr: float | None = None
    noise_offset: float | None = None
    network_dim: float | None = None
    network_alpha: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    optimizer: str | None = None
    lr_scheduler: str | None = None
    resolution: str | None = None
    mixed_precision: str | None = None
    base_model_name: str | None = None
    base_model_hash: str | None = None
    base_model_sha256: str | None = None
    base_model_version: str | None = None
    network_module: str | None = None
    network_args: dict[str, Any] | None = None
    vae_name: str | None = None
    prediction_type: str | None = None


@dataclass
class LoraMetadata:
    title: str | None = None
    author: str | None = None
    description: str | None = None
    output_name: str | None = None
    tags: list[str] = field(default_factory=list)
    trigger_words: list[TriggerWord] = field(default_factory=list)
    training: TrainingFacts = field(default_factory=TrainingFacts)
    peft_config: dict[str, Any] | None = None
    embedded_hashes: dict[str, str] = field(default_factory=dict)
    parse_errors: list[str] = field(default_factory=list)
    raw: dict[str, str] = field(default_factory=dict)

    def to_dict(self, include_raw: bool = False) -> dict[str, Any]:
        """``dataclasses.asdict(self)`` (minus ``raw`` unless asked), built without its per-value overhead."""
        return {name: _plain(getattr(self, name)) for name in _METADATA_FIELDS if include_raw or name != "raw"}

    def to_json(self) -> str:
        """``finite_json(self.to_dict())`` without building that copy: the encoder reads the dataclasses' own
        fields (the library writes one per file; a NaN in a parsed JSON value takes finite_json's cleaning path)."""
        fields_ = {k: v for k, v in vars(self).items() if k != "raw"}  # (the instances' own dicts: no copies)
        fields_["trigger_words"] = [vars(t) for t in self.trigger_words]
        fields_["training"] = vars(self.training)
        return finite_json(fields_)


_ATOMIC = (str, int, float, bool, type(None))


def _plain(value: Any) -> Any:
    """What ``dataclasses.asdict`` makes of a value: dataclasses as dicts, containers rebuilt, the rest copied."""
    if type(value) in _ATOMIC:  # copy.deepcopy returns these unchanged
        return value
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*[_plain(v) for v in value])
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return type(value)((_plain(k), _plain(v)) for k, v in value.items())
    return copy.deepcopy(value)


def _num(value: str, kind: type) -> Any:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(x):
        return None
    return int(x) if kind is int else x


def parse_metadata(meta: dict[str, str]) -> LoraMetadata:
    out = LoraMetadata(raw=dict(meta))
    parsed: dict[str, Any] = {}
    for key in _JSON_KEYS:
        value = meta.get(key)
        if value in (None, "", "None", "null"):
            continue
        if len(value) > MAX_JSON_CHARS:
            if key == "ss_tag_frequency":
                parsed[key] = _tag_frequency_head(value)
                out.parse_errors.append(f"{key}: {len(value):,} characters; trigger words come from its first "
                                        f"{TAG_SCAN_CHARS:,}")
            else:
                out.parse_errors.append(f"{key}: {len(value):,} characters, over the {MAX_JSON_CHARS:,} read")
            continue
        try:
            parsed[key] = json.loads(value)
        except ValueError as exc:
            out.parse_errors.append(f"{key}: not valid JSON ({exc.msg})")
    t = out.training
    for key, attr in _INT_KEYS.items():
        if key in meta:
            setattr(t, attr, _num(meta[key], int))
    for key, attr in _FLOAT_KEYS.items():
        if key in meta:
            setattr(t, attr, _num(meta[key], float))
    for key, attr in _TEXT_KEYS.items():
        if meta.get(key) and getattr(t, attr) is None:
            setattr(t, attr, meta[key])
    if isinstance(parsed.get("ss_network_args"), dict):
        t.network_args = parsed["ss_network_args"]
    if isinstance(parsed.get("lora_adapter_metadata"), dict):
        out.peft_config = parsed["lora_adapter_metadata"]
    out.title = meta.get("modelspec.title") or None
    out.author = meta.get("modelspec.author") or None
    out.description = meta.get("modelspec.description") or None
    out.output_name = meta.get("ss_output_name") or None
    if meta.get("modelspec.tags"):
        out.tags = [s.strip() for s in meta["modelspec.tags"].split(",") if s.strip()]
    for key in ("sshs_model_hash", "sshs_legacy_hash", "modelspec.hash_sha256"):
        if meta.get(key):
            out.embedded_hashes[key] = meta[key]
    out.trigger_words = trigger_candidates(meta, parsed.get("ss_tag_frequency"), t.images)
    return out


def _tag_frequency_head(text: str) -> dict[str, dict[str, int]]:
    """``{folder: {tag: count}}`` from the first ``TAG_SCAN_CHARS`` characters of a huge ``ss_tag_frequency``
    (a bounded scan, no full decode): each ``"tag": count`` pair belongs to the folder opened last before it."""
    head = text[:TAG_SCAN_CHARS]
    folders = [(m.start(), _unescape(m[1])) for m in _FOLDER.finditer(head)]
    out: dict[str, dict[str, int]] = {}
    i = -1
    for m in _TAG_COUNT.finditer(head):
        while i + 1 < len(folders) and folders[i + 1][0] < m.start():
            i += 1
        if i >= 0:
            tags = out.setdefault(folders[i][1], {})
            tag = _unescape(m[1])
            tags[tag] = tags.get(tag, 0) + int(m[2])
    return out


def _unescape(s: str) -> str:
    if "\\" not in s:
        return s
    try:
        return json.loads(f'"{s}"')
    except ValueError:
        return s


def trigger_candidates(meta: dict[str, str], tag_frequency: Any, images: int | None, limit: int = 12) -> list[TriggerWord]:
    """Ranked trigger-word candidates: the declared trigger phrase first, then tags by how many images carry them.

    A tag present in nearly every image of a dataset folder and not a generic booru/quality tag is what people type
    to invoke the LoRA; the dataset folder name (kohya ``10_name``) is another strong hint.
    """
    words: list[TriggerWord] = []
    seen: set[str] = set()

    def add(word: str, source: str, count: int = 0, share: float = 0.0) -> None:
        w = word.strip()
        if w and w.lower() not in seen:
            seen.add(w.lower())
            words.append(TriggerWord(w, source, count, round(share, 4)))

    phrases = meta.get("modelspec.trigger_phrase")
    for phrase in _PHRASE_SPLIT(phrases) if phrases else ():
        add(phrase, "modelspec")
    if not isinstance(tag_frequency, dict):
        return words[:limit]
    counts, folder_names = _tag_counts(tag_frequency)
    total = images or (max(counts.values()) if counts else 0)
    if folder_names:
        lowered: set[str] | None = None
        for folder in folder_names:
            if folder not in counts and lowered is None:
                lowered = {t.lower() for t in counts}
            if folder in counts or folder.lower() in lowered:  # type: ignore[operator]
                add(folder, "tag_frequency", counts.get(folder, 0), counts.get(folder, 0) / total if total else 0.0)
    for ranked in (_best_tags(counts, limit), None):
        if ranked is None:  # the best few were not enough (duplicates, generic tags): every tag, best first
            ranked = _best_tags(counts, None)
        for neg, tag in ranked:  # (a tag added before is skipped by add: the second pass continues the first)
            add(tag, "tag_frequency", -neg, -neg / total if total else 0.0)
            if len(words) >= limit:
                return words[:limit]
    return words[:limit]


def _tag_counts(tag_frequency: dict[Any, Any]) -> tuple[dict[str, int], list[str]]:
    """Images per tag over every dataset folder (tags stripped, non-numeric and non-finite counts ignored), and the
    folders' names (kohya ``<repeats>_<name>``)."""
    counts: dict[str, int] = {}
    folder_names: list[str] = []
    for folder, tags in tag_frequency.items():
        m = _DATASET_FOLDER(str(folder))
        if m:
            folder_names.append(m[1].replace("_", " ").strip())
        if not isinstance(tags, dict):
            continue
        if not counts and tags and set(map(type, tags.values())) == {int} and set(map(type, tags)) == {str}:
            counts = dict(zip(map(str.strip, tags), tags.values(), strict=True))  # the common case: no loop in Python
            if len(counts) == len(tags):
                continue
            counts = {}  # two tags that differ only by spaces around them: added up below
        for tag, n in tags.items():
            if isinstance(n, (int, float)) and math.isfinite(n):
                tag = str(tag).strip()
                counts[tag] = counts.get(tag, 0) + int(n)
    return counts, folder_names


def _best_tags(counts: dict[str, int], want: int | None) -> list[tuple[int, str]]:
    """(-count, tag) of the non-generic tags, by count then tag: all of them (``want`` None), or at least the best
    ``want`` when there are that many (only the tags at or above the count of the ``want + generic``-th best are
    sorted, not thousands)."""
    if want is not None and len(counts) > 4 * (want + len(_COMMON_TAGS)):
        threshold = sorted(counts.values(), reverse=True)[want + len(_COMMON_TAGS) - 1]
        ranked = [(-n, tag) for tag, n in counts.items() if n >= threshold]
    else:
        ranked = [(-n, tag) for tag, n in counts.items()]
    ranked.sort()
    return [(neg, tag) for neg, tag in ranked if tag.lower() not in _COMMON_TAGS]


_METADATA_FIELDS = tuple(f.name for f in fields(LoraMetadata))
