"""The panel with a ramp in a stored profile (real headless Chromium against ``lorawb serve``): the range column shows
it as text and keeps it on save, the block graph draws it as a gradient over its part of the run."""

from __future__ import annotations

import os

import pytest
from test_ui import L17, api, browser, open_editor, page, sample  # noqa: F401  (fixtures and helpers)
from ui_helpers import CHROMIUM, http_json

from lorawb_core.layouts import get_layout

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed (Debian package "
                                                                    "chromium; .ci/run installs it)")


def test_a_ramp_is_shown_kept_on_save_and_drawn_as_a_gradient(page, sample):  # noqa: F811
    weights = dict.fromkeys(get_layout(L17).block_ids, 1.0) | {"REST": 1.0, "IN04": 0.2}
    schedule = {"IN04": ["0.2~1@0-50%"], "OUT03": ["1@0-30%", "0.5@30-100%"], "M00": ["1@20-60%"]}
    status, created = http_json(sample["url"] + "/lorawb/profiles", "POST",
                                {"name": "ui-ramp", "layout_id": L17, "weights": weights, "schedule": schedule})
    assert status == 201, created
    open_editor(page, sample)
    page.select_option(".lwb-profile-select", f"id:{created['id']}")
    locked = page.locator(".lwb-editor-row[data-block=IN04] .lwb-range.is-locked")
    locked.wait_for()
    assert locked.inner_text() == "0.2~1@0-50%" and "ramp" in locked.get_attribute("title")
    ramp = page.locator(".lwb-bar[data-block=IN04] .lwb-bar-range-on.is-ramp")
    ramp.wait_for()
    style = ramp.get_attribute("style")
    assert "left: 0%" in style and "width: 50%" in style
    assert "--lwb-ramp-from: 20%" in style and "--lwb-ramp-to: 100%" in style  # 0.2 of the ramp's peak 1 → 1
    assert page.locator(".lwb-bar[data-block=OUT03] .lwb-bar-range-on").count() == 2  # both pieces drawn
    assert page.locator(".lwb-editor-row[data-block=M00] .lwb-range-text").input_value() == "20-60"  # editable
    page.locator(".lwb-editor-row[data-block=M00] .lwb-range-text").fill("10-60")
    page.wait_for_selector(".lwb-dirty:visible")
    page.click(".lwb-editor-head button:text-is('Save')")
    page.wait_for_selector(".lwb-dirty", state="hidden")
    saved = api(sample, f"/lorawb/profiles/{created['id']}")
    assert saved["schedule"] == {**schedule, "M00": ["1@10-60%"]}  # the ramp kept as stored
