"""The panel in a real headless Chromium (Debian's, driven by Playwright) against ``lorawb serve`` on the sample
library: list, search and filters, one bar per block, pending vs measured, the XSS fixture as text, live rescan,
a bounded DOM with thousands of rows; a screenshot goes under the test's tmp_path."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from library_helpers import HOUR_AGO_NS, tiny
from ui_helpers import CHROMIUM, CHROMIUM_ARGS, ServeProcess, http_json

from lorawb_core.layouts import get_layout
from lorawb_core.samples import build_sample_library

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed (Debian package "
                                                                    "chromium; .ci/run installs it)")
XSS_NAME = "<img src=x onerror=alert(1)>"
XSS_TRIGGER = "<script>alert('trigger')</script>"


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    base = tmp_path_factory.mktemp("ui")
    specs = build_sample_library(base / "lib")
    with ServeProcess(base / "db" / "library.sqlite3", [base / "lib"]) as server:
        status = server.wait_scan()
        assert status["state"] == "done" and status["summary"]["files"] == len(specs), status
        yield {"server": server, "url": server.url, "base": base, "count": len(specs)}


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, sample):
    # bypass_csp: Playwright's own helpers evaluate strings; the page's CSP is checked in test_routes_security,
    # and escaping must hold without it
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    pg = context.new_page()
    pg.errors, pg.alerts, pg.asked, pg.answers = [], [], [], []

    def on_dialog(d):
        if d.type == "alert":  # the panel never alerts: an alert is a script run from LoRA metadata
            pg.alerts.append(d.message)
            d.dismiss()
            return
        pg.asked.append((d.type, d.message))
        answer = pg.answers.pop(0) if pg.answers else False
        if answer is False:
            d.dismiss()
        else:
            d.accept(answer if isinstance(answer, str) else "")

    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("dialog", on_dialog)
    yield pg
    context.close()
    assert not pg.errors, pg.errors
    assert not pg.alerts, f"a script ran from LoRA metadata: {pg.alerts}"


def api(sample, path):
    status, body = http_json(sample["url"] + path)
    assert status == 200, body
    return body


def open_panel(page, sample):
    page.goto(sample["url"] + "/lorawb/ui")
    page.wait_for_selector(".lwb-row .lwb-row-name:not(:empty)")
    page.wait_for_function("() => !document.querySelector('.lwb-row.is-loading')")


def row_names(page):
    return page.eval_on_selector_all(".lwb-row:not(.is-loading) .lwb-row-name", "els => els.map(e => e.textContent)")


def search(page, text):
    page.fill(".lwb-search", text)
    page.press(".lwb-search", "Enter")


def wait_count(page, total):
    label = f"{total:,} LoRA" + ("" if total == 1 else "s")
    page.wait_for_function("label => document.querySelector('.lwb-count')?.textContent === label", arg=label)


def show_only(page, name):
    """Search ``name`` and wait until the list shows the results (not the rows from before)."""
    search(page, name)
    page.wait_for_function("""name => { // the list shows the search's results (not the rows from before)
        const rows = [...document.querySelectorAll('.lwb-row')];
        return rows.length && rows.every(r => !r.classList.contains('is-loading')
            && r.querySelector('.lwb-row-name').textContent.toLowerCase().includes(name.toLowerCase())); }""",
                           arg=name)


def select_lora(page, name):
    show_only(page, name)
    page.locator(".lwb-row", has_text=name).first.click()
    page.wait_for_selector(".lwb-detail-name")


def test_the_list_renders(page, sample, tmp_path):
    open_panel(page, sample)
    wait_count(page, sample["count"])
    names = row_names(page)
    listed = api(sample, f"/lorawb/loras?limit={len(names)}")
    assert names == [i["name"] for i in listed["items"]]
    assert page.locator(".lwb-row .lwb-badge").count() == len(names)
    assert page.locator(".lwb-row .lwb-spark-bars").count() == len(names)  # every sample LoRA is measured
    shot = tmp_path / "panel.png"
    page.screenshot(path=str(shot))
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 10_000


def test_search_and_filters(page, sample):
    open_panel(page, sample)
    search(page, "flux")
    expected = api(sample, "/lorawb/loras?q=flux")
    wait_count(page, expected["total"])
    assert sorted(row_names(page)) == sorted(i["name"] for i in expected["items"]) and expected["total"] >= 3
    search(page, "")
    page.select_option("select[name=family]", "sd3")
    sd3 = api(sample, "/lorawb/loras?family=sd3")
    wait_count(page, sd3["total"])
    assert sorted(row_names(page)) == sorted(i["name"] for i in sd3["items"])
    assert set(page.eval_on_selector_all(".lwb-row .lwb-badge", "els => els.map(e => e.textContent)")) == {"SD3"}
    page.select_option("select[name=family]", "")
    page.select_option("select[name=layout]", "sdxl_unet_12")
    xl = api(sample, "/lorawb/loras?layout=sdxl_unet_12")
    wait_count(page, xl["total"])
    subs = page.eval_on_selector_all(".lwb-row .lwb-row-sub", "els => els.map(e => e.textContent)")
    assert len(subs) == xl["total"] and all("sdxl_unet_12" in sub for sub in subs), subs
    page.click("text=Reset")
    wait_count(page, sample["count"])


@pytest.mark.parametrize("name", ["Portrait Flux", "ponychar_xl", "pixel_art_tucker", "sd35_large_style"])
def test_selecting_a_lora_draws_one_bar_per_block(page, sample, name):
    open_panel(page, sample)
    select_lora(page, name)
    detail = api(sample, f"/lorawb/loras/{page.locator('.lwb-detail-id').inner_text().strip()}")
    layout = get_layout(detail["layout_id"])
    page.wait_for_selector(".lwb-graph .lwb-bar")
    bars = page.eval_on_selector_all(".lwb-graph .lwb-bar", "els => els.map(e => e.dataset.block)")
    assert bars == layout.block_ids, (name, layout.id)
    assert page.locator(".lwb-graph .lwb-bar-fill").count() == len(layout.blocks)
    assert page.locator(".lwb-bar-pending").count() == 0
    head = page.locator(".lwb-graph-head").inner_text()
    assert f"{len(layout.blocks)} blocks" in head and layout.id in head and "MEASURED" in head.upper()
    groups = page.eval_on_selector_all(".lwb-graph-group", "els => els.map(e => e.dataset.group)")
    assert groups == list(dict.fromkeys(b.group for b in layout.blocks))


def test_the_xss_fixture_renders_as_text(page, sample, tmp_path):
    open_panel(page, sample)
    select_lora(page, "onerror")
    assert row_names(page) == [XSS_NAME]
    assert page.locator(".lwb-detail-name").inner_text() == XSS_NAME
    chips = page.eval_on_selector_all(".lwb-chips .lwb-copy", "els => els.map(e => e.textContent)")
    assert XSS_TRIGGER in chips
    injected = page.evaluate("""() => ({
        img: document.querySelectorAll('.lwb img').length,
        script: document.querySelectorAll('.lwb script').length,
        onerror: document.querySelectorAll('.lwb [onerror]').length })""")
    assert injected == {"img": 0, "script": 0, "onerror": 0}
    page.wait_for_timeout(300)  # give a would-be onerror handler time to fire (the page fixture checks alerts)
    shot = tmp_path / "xss.png"
    page.screenshot(path=str(shot))
    print(f"screenshot: {shot}")


def test_standalone_page_has_no_graph_actions_and_copies(page, sample):
    open_panel(page, sample)
    select_lora(page, "Portrait Flux")
    assert page.locator("text=Load node").count() == 0  # no ComfyUI graph here
    assert page.locator(".lwb-actions button", has_text="CSV").is_enabled()


def test_rescan_shows_progress_and_a_pending_lora_differs(page, sample):
    base = sample["base"]
    tiny(base / "lib" / "new" / "fresh_pending.safetensors", "sdxl", 5)
    open_panel(page, sample)
    status, body = http_json(sample["url"] + "/lorawb/scan", "POST", {"structure_only": True})
    assert status in (200, 202), body
    page.wait_for_function("() => document.querySelector('.lwb-scan-text')?.textContent.startsWith('Last scan')")
    assert sample["server"].wait_scan()["summary"]["new"] == 1
    wait_count(page, sample["count"] + 1)
    select_lora(page, "fresh_pending")
    detail = api(sample, f"/lorawb/loras/{page.locator('.lwb-detail-id').inner_text().strip()}")
    assert detail["blocks_state"] == "pending"
    layout = get_layout(detail["layout_id"])
    assert page.locator(".lwb-bar-pending").count() == len(layout.blocks)
    assert page.locator(".lwb-bar-fill").count() == 0
    assert "pending" in page.locator(".lwb-graph-state").inner_text().lower()
    assert page.locator(".lwb-row.is-pending").count() == 1
    page.click("text=Rescan")  # the button: measures the pending LoRA, the details refresh by themselves
    page.wait_for_selector(".lwb-graph .lwb-bar-fill", timeout=30_000)
    assert page.locator(".lwb-graph .lwb-bar-fill").count() == len(layout.blocks)


def test_an_unusable_lora_shows_its_reason_and_never_a_strength(page, sample):
    import numpy as np
    from safetensors.numpy import load_file, save_file

    path = sample["base"] / "lib" / "broken" / "nan_weights.safetensors"
    tiny(path, "sd15", 6)
    tensors = load_file(str(path))
    up = next(k for k in tensors if k.endswith("lora_up.weight"))
    tensors[up][0, 0] = np.nan
    save_file(tensors, str(path))
    os.utime(path, ns=(HOUR_AGO_NS, HOUR_AGO_NS))
    status, body = http_json(sample["url"] + "/lorawb/scan", "POST", {})
    assert status in (200, 202), body
    sample["server"].wait_scan()
    try:
        open_panel(page, sample)
        show_only(page, "nan_weights")
        row = page.locator(".lwb-row.is-error", has_text="nan_weights").first
        assert "NaN/Inf" in row.get_attribute("title")
        assert row.locator(".lwb-spark-bars").count() == 0 and row.locator(".lwb-row-state").inner_text().lower() == "error"
        row.click()
        page.wait_for_selector(".lwb-detail-name")
        assert "NaN/Inf" in page.locator(".lwb-alert").inner_text()
        assert page.locator(".lwb-graph .lwb-bar-fill").count() == 0
    finally:  # the file goes again: later tests count the sample library as it was
        path.unlink()
        status, _ = http_json(sample["url"] + "/lorawb/scan", "POST", {"structure_only": True})
        sample["server"].wait_scan()


def add_synthetic_rows(db_path: Path, n: int) -> None:
    """Copies of the real rows with new names, paths and IDs (list load tests; serve them with --no-scan)."""
    conn = sqlite3.connect(db_path)
    cols = [r[1] for r in conn.execute("PRAGMA table_xinfo(loras)") if r[1] not in ("id", "facets")]
    real = conn.execute(f"SELECT {', '.join(cols)} FROM loras").fetchall()
    rows = []
    for i in range(n):
        r = dict(zip(cols, real[i % len(real)], strict=True))
        r.update(name=f"synthetic lora {i:05d}", sort_key=f"synthetic lora {i:05d}", path=f"/synthetic/{i}.safetensors",
                 file_name=f"{i}.safetensors", stable_id=f"SYN-TST-{i:05d}", addnet=None, scan_state="pending", missing=0,
                 trigger_words=json.dumps([]))
        rows.append(tuple(r[c] for c in cols))
    conn.executemany(f"INSERT INTO loras ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", rows)
    conn.commit()
    conn.close()


def test_the_list_stays_virtual_with_thousands_of_rows(browser, sample, tmp_path):
    db = tmp_path / "big.sqlite3"
    src, dst = sqlite3.connect(sample["base"] / "db" / "library.sqlite3"), sqlite3.connect(db)
    src.backup(dst)  # the live database is in WAL mode: copy it through SQLite
    src.close()
    dst.close()
    add_synthetic_rows(db, 5000)
    with ServeProcess(db, [], extra=["--no-scan"]) as server:
        context = browser.new_context(viewport={"width": 420, "height": 900}, bypass_csp=True)
        pg = context.new_page()
        pg.goto(server.url + "/lorawb/ui")
        pg.wait_for_selector(".lwb-row .lwb-row-name:not(:empty)")
        total = http_json(server.url + "/lorawb/loras?limit=1")[1]["total"]
        assert total >= 5000
        wait_count(pg, total)
        first = pg.locator(".lwb-row").count()
        pg.eval_on_selector(".lwb-vlist", "el => { el.scrollTop = el.scrollHeight / 2; }")
        # the scroll event and the redraw it schedules come in later frames: wait for the middle rows to be drawn
        # and loaded (waiting only for "nothing is loading" also passes before the redraw)
        pg.wait_for_function("(third) => { const row = document.querySelector('.lwb-row');"
                             " return row && Number(row.dataset.index) > third"
                             " && !document.querySelector('.lwb-row.is-loading'); }", arg=total // 3)
        middle = pg.locator(".lwb-row").count()
        assert first < 60 and middle < 60, (first, middle)  # only the visible rows (+ overscan) exist
        index = int(pg.eval_on_selector(".lwb-row", "el => el.dataset.index"))
        assert total // 3 < index < 2 * total // 3
        context.close()


# ---- profile editor ------------------------------------------------------------------------------------------------
L17 = "sd15_unet_17"


def weight_box(page, block):
    return page.locator(f".lwb-editor-row[data-block={block}] .lwb-weight")


def set_slider(page, block, value):
    page.eval_on_selector(f".lwb-editor-row[data-block={block}] .lwb-slider",
                          "(el, v) => { el.value = v; el.dispatchEvent(new Event('input', {bubbles: true})); }",
                          str(value))


def open_editor(page, sample, lora="mychar_sd15_v2"):
    open_panel(page, sample)
    select_lora(page, lora)
    page.wait_for_selector(".lwb-editor-row")


def stored(sample, name):
    profiles = api(sample, f"/lorawb/profiles?layout={L17}&builtins=0")["profiles"]
    return next((p for p in profiles if p["name"] == name), None)


def make_profile(page, sample, name):
    """Save the loaded built-in under ``name`` (Save as… answers the name prompt)."""
    page.answers.append(name)
    page.click("text=Save as…")
    page.wait_for_function("name => document.querySelector('.lwb-profile-select option:checked')?.textContent === "
                           "name", arg=name)
    profile = stored(sample, name)
    assert profile is not None and not page.locator(".lwb-dirty").is_visible()
    return profile


def test_editing_marks_unsaved_and_saving_persists(page, sample, tmp_path):
    open_editor(page, sample)
    assert page.locator(".lwb-editor-row").count() == 17 + 1  # the blocks, then REST
    assert page.locator(".lwb-editor-row").last.get_attribute("data-block") == "REST"
    assert weight_box(page, "REST").input_value() == "1"
    assert page.locator(".lwb-profile-select").input_value().startswith("builtin:")
    profile = make_profile(page, sample, "ui-edit")
    assert not page.locator(".lwb-dirty").is_visible()
    weight_box(page, "IN01").fill("0.25")
    page.wait_for_selector(".lwb-dirty:visible")
    assert page.locator(".lwb-editor-row[data-block=IN01]").get_attribute("class").count("is-changed") == 1
    slider = page.locator(".lwb-editor-row[data-block=IN01] .lwb-slider")
    assert float(slider.input_value()) == 0.25  # the number box moves the slider
    set_slider(page, "OUT03", 1.5)
    weight_box(page, "REST").fill("0")
    assert weight_box(page, "OUT03").input_value() == "1.5"  # and the slider the number box
    stats = page.locator(".lwb-editor-stats").inner_text()
    assert stats.startswith("mean ") and "variance" in stats
    assert stored(sample, "ui-edit")["weights"]["IN01"] == 1.0  # nothing written yet
    shot = tmp_path / "editor-unsaved.png"
    page.screenshot(path=str(shot))
    print(f"screenshot: {shot}")
    page.click(".lwb-editor-head button:text-is('Save')")
    page.wait_for_selector(".lwb-dirty", state="hidden")
    saved = api(sample, f"/lorawb/profiles/{profile['id']}")
    assert saved["weights"]["IN01"] == 0.25 and saved["weights"]["OUT03"] == 1.5 and saved["weights"]["IN02"] == 1.0
    assert saved["weights"]["REST"] == 0.0


def test_reset_restores_the_saved_values(page, sample):
    open_editor(page, sample)
    profile = make_profile(page, sample, "ui-reset")
    weight_box(page, "IN04").fill("0")
    set_slider(page, "M00", -1)
    page.wait_for_selector(".lwb-dirty:visible")
    page.click(".lwb-editor-head button:text-is('Reset')")
    page.wait_for_selector(".lwb-dirty", state="hidden")
    assert weight_box(page, "IN04").input_value() == "1" and weight_box(page, "M00").input_value() == "1"
    assert float(page.locator(".lwb-editor-row[data-block=M00] .lwb-slider").input_value()) == 1.0
    assert api(sample, f"/lorawb/profiles/{profile['id']}")["weights"] == profile["weights"]


def test_range_validation_blocks_saving(page, sample):
    open_editor(page, sample)
    make_profile(page, sample, "ui-range")
    box = weight_box(page, "IN05")
    box.fill("12")
    assert "is-invalid" in box.get_attribute("class") and box.get_attribute("aria-invalid") == "true"
    assert "IN05 outside -10 … 10" in page.locator(".lwb-editor-msg").inner_text()
    assert page.locator(".lwb-editor-head button:text-is('Save')").is_disabled()
    box.fill("-0.5")
    assert "is-invalid" not in box.get_attribute("class") and page.locator(".lwb-editor-msg").inner_text() == ""
    assert page.locator(".lwb-editor-head button:text-is('Save')").is_enabled()


def test_switching_with_unsaved_changes_asks_first(page, sample):
    open_editor(page, sample)
    make_profile(page, sample, "ui-switch")
    weight_box(page, "IN07").fill("0.5")
    page.wait_for_selector(".lwb-dirty:visible")
    page.answers.append(False)  # "discard?" → no: stay
    show_only(page, "Portrait Flux")
    page.locator(".lwb-row", has_text="Portrait Flux").click()
    page.wait_for_timeout(300)
    assert page.asked and "unsaved changes" in page.asked[-1][1]
    assert page.locator(".lwb-detail-name").inner_text() == "mychar_sd15_v2"
    page.answers.append(True)  # again, and discard
    page.locator(".lwb-row", has_text="Portrait Flux").click()
    page.wait_for_function("() => document.querySelector('.lwb-detail-name')?.textContent === 'Portrait Flux'")
    page.wait_for_selector(".lwb-editor-row[data-block=D00]")
    assert page.locator(".lwb-editor-row").count() == 61 + 1 and not page.locator(".lwb-dirty").is_visible()
    assert stored(sample, "ui-switch")["weights"]["IN07"] == 1.0  # discarded, not saved


def test_copy_in_a_dialect_and_delete(page, sample):
    open_editor(page, sample)
    profile = make_profile(page, sample, "ui-copy")
    weight_box(page, "BASE").fill("0")
    page.select_option(".lwb-editor select[name=dialect]", "lbw")
    page.click(".lwb-editor-head button:text-is('Copy')")
    page.wait_for_function("() => document.querySelector('.lwb-editor').dataset.copied")
    copied = page.eval_on_selector(".lwb-editor", "el => el.dataset.copied")
    assert copied == "ui-copy:" + ",".join(["0"] + ["1"] * 16)  # the draft as LBW, unsaved edits included
    page.select_option(".lwb-editor select[name=dialect]", "ours")
    page.click(".lwb-editor-head button:text-is('Copy')")
    page.wait_for_function("() => document.querySelector('.lwb-editor').dataset.copied.startsWith('BASE=0, ')")
    page.click(".lwb-editor-head button:text-is('Reset')")
    page.answers.append(True)
    page.click(".lwb-editor-head button:text-is('Delete')")
    page.wait_for_function("() => !document.querySelector('.lwb-profile-select option:checked')?.textContent"
                           ".startsWith('ui-copy')")
    status, _ = http_json(sample["url"] + f"/lorawb/profiles/{profile['id']}")
    assert status == 404


def test_block_weight_overlay_follows_the_draft(page, sample):
    open_editor(page, sample)
    assert page.locator(".lwb-graph .lwb-bar-weight").count() == 17
    before = page.eval_on_selector(".lwb-bar[data-block=OUT04] .lwb-bar-weight", "el => el.style.bottom")
    weight_box(page, "OUT04").fill("0")
    page.wait_for_function("() => document.querySelector('.lwb-bar[data-block=OUT04] .lwb-bar-weight')"
                           ".style.bottom === '0%'")
    assert before != "0%"


# ---- composer --------------------------------------------------------------------------------------------------
def test_composer_verdict_reasons_and_combined_graph(page, sample):
    open_panel(page, sample)
    search(page, "sd15")
    for name in ("mychar_sd15_v2", "ink_sketch_loha"):
        show_only(page, name)
        page.locator(".lwb-row", has_text=name).click(modifiers=["Control"])
    page.wait_for_selector(".lwb-verdict.is-ok")
    assert page.locator(".lwb-stack-row").count() == 2
    layout = get_layout(page.locator(".lwb-composer .lwb-graph-layout").inner_text())
    assert page.locator(".lwb-composer .lwb-bar").count() == len(layout.blocks)
    assert page.locator(".lwb-tab[aria-selected=true]").inner_text() == "Composer (2)"
    show_only(page, "Portrait Flux")
    page.locator(".lwb-row", has_text="Portrait Flux").click(modifiers=["Control"])
    page.wait_for_selector(".lwb-verdict.is-refused")
    reasons = page.eval_on_selector_all(".lwb-reasons li", "els => els.map(e => e.textContent)")
    assert reasons and any("flux" in r for r in reasons)
    assert page.locator(".lwb-composer .lwb-graph").count() == 0
    page.click("text=Clear the stack")
    page.wait_for_selector(".lwb-stack-row", state="detached")


def test_composer_merges_the_stack_to_a_new_file(page, sample):
    open_panel(page, sample)
    search(page, "sd15")
    for name in ("mychar_sd15_v2", "ink_sketch_loha"):
        show_only(page, name)
        page.locator(".lwb-row", has_text=name).click(modifiers=["Control"])
    page.wait_for_selector(".lwb-verdict.is-ok")
    page.fill(".lwb-merge-name", "merged/ui_stack")
    page.fill(".lwb-merge-rank", "0")
    page.click("text=Merge to file…")
    result = page.wait_for_selector(".lwb-merge-result", timeout=120_000).inner_text()
    assert result.startswith("merged 2 LoRA(s) into") and "ui_stack.safetensors" in result and "concat" in result
    sid = result.splitlines()[0].rsplit("(", 1)[1].rstrip(")")  # "merged 2 LoRA(s) into PATH (ID)"
    assert api(sample, f"/lorawb/loras/{sid}")["stable_id"] == sid
    page.click("text=Clear the stack")
    page.wait_for_selector(".lwb-stack-row", state="detached")


def test_composer_saves_the_combined_weights_as_a_profile(page, sample):
    from lorawb_core.combined_profile import combined_weights
    from lorawb_core.compose import check_stack
    from lorawb_core.library import open_library

    open_panel(page, sample)
    search(page, "sd15")
    ids = []
    for name in ("mychar_sd15_v2", "ink_sketch_loha"):
        show_only(page, name)
        page.locator(".lwb-row", has_text=name).click(modifiers=["Control"])
        ids.append(page.locator(".lwb-stack-row").last.get_attribute("data-id"))
    page.locator(".lwb-stack-row", has_text=ids[0]).locator(".lwb-strength").fill("0.7")
    weights = page.locator(".lwb-stack-row", has_text=ids[1]).locator(".lwb-stack-weights")
    weights.fill("OUTD")
    weights.press("Enter")
    weights.blur()
    page.wait_for_selector(".lwb-verdict.is-ok")
    page.fill(".lwb-combined-name", "ui-combined")
    page.click("text=Save combined as profile")
    assert page.wait_for_selector(".lwb-combined-result").inner_text().startswith("Saved profile ui-combined")
    saved = next(p for p in api(sample, "/lorawb/profiles?builtins=false")["profiles"] if p["name"] == "ui-combined")
    with open_library(sample["base"] / "db" / "library.sqlite3") as db:  # the same stack through the core
        verdict = check_stack(db, [{"lora": ids[0], "strength_model": 0.7, "strength_clip": 0.7},
                                   {"lora": ids[1], "weights": "OUTD"}], directions=False)
    expected = combined_weights(verdict)
    assert saved["layout_id"] == verdict.layout_id and saved["weights"] == expected
    assert len(set(expected.values())) > 2  # OUTD and the strengths made a real mix
    page.click("text=Save combined as profile")  # the same name again: refused, said in the panel
    assert "ui-combined" in page.wait_for_selector(".lwb-combined-error").inner_text()
    page.click("text=Clear the stack")
    page.wait_for_selector(".lwb-stack-row", state="detached")


def test_a_remote_server_asks_for_the_token_before_changes(browser, sample, tmp_path):
    db = tmp_path / "remote.sqlite3"
    src, dst = sqlite3.connect(sample["base"] / "db" / "library.sqlite3"), sqlite3.connect(db)
    src.backup(dst)
    src.close()
    dst.close()
    with ServeProcess(db, [], extra=["--no-scan", "--host", "0.0.0.0"], env={"LORAWB_TOKEN": "tok-123"}) as server:
        assert http_json(server.url + "/lorawb/info")[1]["token_required"] is True
        context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
        pg = context.new_page()
        asked = []
        answers = ["ui-remote", "wrong", "tok-123"]  # the profile name, a wrong token, the right one

        def on_dialog(d):
            asked.append(d.message)
            d.accept(answers.pop(0))

        pg.on("dialog", on_dialog)
        pg.goto(server.url + "/lorawb/ui")
        pg.wait_for_selector(".lwb-row .lwb-row-name:not(:empty)")
        show_only(pg, "mychar_sd15_v2")
        pg.locator(".lwb-row", has_text="mychar_sd15_v2").click()
        pg.wait_for_selector(".lwb-editor-row")
        pg.click("text=Save as…")
        pg.wait_for_function("() => document.querySelector('.lwb-profile-select option:checked')?.textContent "
                             "=== 'ui-remote'", timeout=15_000)
        assert len(asked) == 3 and "X-Lorawb-Token" in asked[1] and asked[1] != asked[2], asked
        profiles = http_json(server.url + f"/lorawb/profiles?layout={L17}&builtins=0")[1]["profiles"]
        assert "ui-remote" in [p["name"] for p in profiles]
        status, body = http_json(server.url + "/lorawb/scan/cancel", "POST")
        assert status == 401 and body["error"]["field"] == "X-Lorawb-Token"
        context.close()


# ---- schedules: the range column -----------------------------------------------------------------------------------
def range_box(page, block):
    return page.locator(f".lwb-editor-row[data-block={block}] .lwb-range-text")


def set_handle(page, block, which, value):
    page.eval_on_selector(f".lwb-editor-row[data-block={block}] .lwb-range-{which}",
                          "(el, v) => { el.value = v; el.dispatchEvent(new Event('input', {bubbles: true})); }",
                          str(value))


def test_range_column_handles_text_validation_timeline_copy_and_save(page, sample, tmp_path):
    open_editor(page, sample)
    profile = make_profile(page, sample, "ui-schedule")
    assert range_box(page, "IN04").input_value() == ""  # whole run
    set_handle(page, "IN04", "end", 40)  # the handles write the text box
    assert range_box(page, "IN04").input_value() == "0-40"
    page.wait_for_selector(".lwb-dirty:visible")
    range_box(page, "OUT03").fill("30-100")  # the text box moves the handles
    assert page.locator(".lwb-editor-row[data-block=OUT03] .lwb-range-start").input_value() == "30"
    page.wait_for_function("() => document.querySelector('.lwb-bar[data-block=IN04] .lwb-bar-range-on')"
                           "?.style.width === '40%'")  # the timeline strip under the block's bar
    assert page.locator(".lwb-bar[data-block=IN05] .lwb-bar-range").count() == 0
    range_box(page, "M00").fill("60-20")
    assert "M00 range starts at or after its end" in page.locator(".lwb-editor-msg").inner_text()
    assert page.locator(".lwb-editor-head button:text-is('Save')").is_disabled()
    range_box(page, "M00").fill("20-120")
    assert "M00 range outside 0-100 %" in page.locator(".lwb-editor-msg").inner_text()
    range_box(page, "M00").fill("")
    assert page.locator(".lwb-editor-msg").inner_text() == ""
    page.select_option(".lwb-editor select[name=dialect]", "ours")
    page.click(".lwb-editor-head button:text-is('Copy')")
    page.wait_for_function("() => (document.querySelector('.lwb-editor').dataset.copied || '').includes('@')")
    copied = page.eval_on_selector(".lwb-editor", "el => el.dataset.copied")
    assert "IN04=1@0-40%" in copied and "OUT03=1@30-100%" in copied and "IN05=1," in copied
    shot = tmp_path / "editor-ranges.png"
    page.screenshot(path=str(shot))
    print(f"screenshot: {shot}")
    page.click(".lwb-editor-head button:text-is('Save')")
    page.wait_for_selector(".lwb-dirty", state="hidden")
    saved = api(sample, f"/lorawb/profiles/{profile['id']}")
    assert saved["schedule"] == {"IN04": ["1@0-40%"], "OUT03": ["1@30-100%"]}
    page.reload()
    open_editor(page, sample)
    page.select_option(".lwb-profile-select", f"id:{profile['id']}")
    page.wait_for_function("() => document.querySelector(\".lwb-editor-row[data-block=IN04] .lwb-range-text\")"
                           "?.value === '0-40'")  # read back from the stored profile
