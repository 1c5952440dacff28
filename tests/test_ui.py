"""The panel in a real headless Chromium (Debian's, driven by Playwright) against ``lorawb serve`` on the sample
library: list, search and filters, one bar per block, pending vs measured, the XSS fixture as text, live rescan,
a bounded DOM with thousands of rows; a screenshot goes under the test's tmp_path."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from library_helpers import tiny
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
    pg.errors, pg.dialogs = [], []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    yield pg
    context.close()
    assert not pg.errors, pg.errors
    assert not pg.dialogs, f"a script ran from LoRA metadata: {pg.dialogs}"


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


def select_lora(page, name):
    search(page, name)
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
    assert all("sdxl_unet_12" in sub for sub in page.eval_on_selector_all(
        ".lwb-row .lwb-row-sub", "els => els.map(e => e.textContent)"))
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
    page.wait_for_timeout(300)  # give a would-be onerror handler time to fire (the page fixture checks dialogs)
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


def add_synthetic_rows(db_path: Path, n: int) -> None:
    """Copies of the real rows with new names, paths and IDs (list load tests; serve them with --no-scan)."""
    conn = sqlite3.connect(db_path)
    cols = [r[1] for r in conn.execute("PRAGMA table_xinfo(loras)") if r[1] not in ("id", "facets")]
    real = conn.execute(f"SELECT {', '.join(cols)} FROM loras").fetchall()
    rows = []
    for i in range(n):
        r = dict(zip(cols, real[i % len(real)], strict=True))
        r.update(name=f"synthetic lora {i:05d}", sort_key=f"synthetic lora {i:05d}", path=f"/synthetic/{i}.safetensors",
                 file_name=f"{i}.safetensors", stable_id=f"SYN-TST-{i:05d}", addnet=None, scan_state="pending",
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
        pg.wait_for_function("() => !document.querySelector('.lwb-row.is-loading')")
        middle = pg.locator(".lwb-row").count()
        assert first < 60 and middle < 60, (first, middle)  # only the visible rows (+ overscan) exist
        index = int(pg.eval_on_selector(".lwb-row", "el => el.dataset.index"))
        assert index > total // 3
        context.close()
