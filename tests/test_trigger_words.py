"""Trigger-word ranking: the fast path (no per-tag loop for one folder of integer counts, only the best tags sorted)
gives exactly what the straightforward ranking gives, for arbitrary tag frequencies."""

from __future__ import annotations

import math
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from lorawb_core.metadata import _COMMON_TAGS, TriggerWord, trigger_candidates


def _reference(meta, tag_frequency, images, limit=12):
    """The ranking as it was written first: every tag lowered and sorted."""
    words, seen = [], set()

    def add(word, source, count=0, share=0.0):
        w = word.strip()
        if w and w.lower() not in seen:
            seen.add(w.lower())
            words.append(TriggerWord(w, source, count, round(share, 4)))

    for phrase in re.split(r"[,\n]", meta.get("modelspec.trigger_phrase", "")):
        add(phrase, "modelspec")
    if not isinstance(tag_frequency, dict):
        return words[:limit]
    counts, folder_names = {}, []
    for folder, tags in tag_frequency.items():
        m = re.match(r"^\d+_(.+)$", str(folder))
        if m:
            folder_names.append(m[1].replace("_", " ").strip())
        if isinstance(tags, dict):
            for tag, n in tags.items():
                if isinstance(n, (int, float)) and math.isfinite(n):
                    tag = str(tag).strip()
                    counts[tag] = counts.get(tag, 0) + int(n)
    total = images or (max(counts.values()) if counts else 0)
    if folder_names:
        lowered = {t.lower() for t in counts}
        for folder in folder_names:
            if folder.lower() in lowered:
                add(folder, "tag_frequency", counts.get(folder, 0), counts.get(folder, 0) / total if total else 0.0)
    ranked = sorted((-n, tag) for tag, n in counts.items() if tag.lower() not in _COMMON_TAGS)
    for neg, tag in ranked:
        add(tag, "tag_frequency", -neg, -neg / total if total else 0.0)
        if len(words) >= limit:
            break
    return words[:limit]


# few distinct letters and counts: case duplicates, spaces around tags, ties and generic tags happen often
_tag = st.one_of(st.sampled_from(sorted(_COMMON_TAGS) + ["Solo", " solo", "Cat", "cat ", "cat", "mychar", "MyChar"]),
                 st.text(alphabet="aAbB _İ", min_size=0, max_size=4))
_count = st.one_of(st.integers(0, 6), st.integers(-3, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                   st.booleans(), st.none(), st.text(max_size=2))
_tags = st.dictionaries(_tag, st.integers(0, 6), max_size=200)  # the common case: integer counts only
_odd_tags = st.dictionaries(_tag, _count, max_size=40)
_folder = st.one_of(st.sampled_from(["10_mychar", "3_cat", "1_my_char", "5_solo", "img", "2_İb"]), st.text(max_size=6))
_frequency = st.one_of(st.dictionaries(_folder, st.one_of(_tags, _odd_tags, st.integers()), max_size=4), st.none(),
                       st.lists(st.integers(), max_size=2))


@settings(max_examples=600, deadline=None)
@given(_frequency, st.sampled_from(["", "mychar, cat", "a,b,c,d,e,f,g,h,i,j,k,l,m", " Cat \n solo"]),
       st.one_of(st.none(), st.integers(0, 50)), st.integers(1, 15))
def test_trigger_candidates_equal_the_straightforward_ranking(tag_frequency, phrase, images, limit):
    meta = {"modelspec.trigger_phrase": phrase} if phrase else {}
    assert trigger_candidates(meta, tag_frequency, images, limit) == _reference(meta, tag_frequency, images, limit)


def test_thousands_of_tags_keep_the_best_non_generic_ones():
    tags = {f"tag{i}": 5000 - i for i in range(3000)} | {t: 10**6 for t in _COMMON_TAGS} | {"TAG3": 4997}
    words = trigger_candidates({}, {"10_tag7": tags}, 5000)
    assert [w.word for w in words] == ["tag7", "tag0", "tag1", "tag2", "TAG3", "tag4", "tag5", "tag6", "tag8", "tag9",
                                       "tag10", "tag11"]  # the folder's tag first; tag3 ties with TAG3, a duplicate
    assert words[1].count == 5000 and words[1].share == 1.0
    assert trigger_candidates({}, {"10_tag7": tags}, 5000) == _reference({}, {"10_tag7": tags}, 5000)
