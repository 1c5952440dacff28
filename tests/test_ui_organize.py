"""The Organize view in a real headless Chromium against ``lorawb serve``: the drop folder's verdicts and reasons,
Apply with the files really moved, the reconcile report, Undo putting them back; HTML in a reason shows as text."""

from __future__ import annotations

import os

import pytest
from organize_helpers import make_drop
from ui_helpers import CHROMIUM, CHROMIUM_ARGS, ServeProcess

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed (Debian package "
                                                                    "chromium; .ci/run installs it)")
XSS_FILE = "<img src=x onerror=alert(1)>.safetensors"


@pytest.fixture
def served(tmp_path):
    lib = tmp_path / "lib"
    make_drop(lib, 2)  # the drop: loose files at the top of the root
    (lib / XSS_FILE).write_bytes(b"not a LoRA")
    env = {"LORAWB_CONFIG": str(tmp_path / "no-config.json")}
    with ServeProcess(tmp_path / "db" / "library.sqlite3", [lib], env=env) as server:
        server.wait_scan()
        yield {"url": server.url, "lib": lib}


@pytest.fixture
def page(served):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
        pg = context.new_page()
        errors, alerts = [], []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.on("dialog", lambda d: (alerts.append(d.message), d.dismiss()))
        yield pg
        browser.close()
        assert not errors, errors
        assert not alerts, alerts


def verdicts(page):
    return page.eval_on_selector_all(".lwb-organize-item", "els => els.map(e => e.dataset.verdict)")


def test_organize_view_plans_applies_reconciles_and_undoes(page, served, tmp_path):
    lib = served["lib"]
    page.goto(served["url"] + "/lorawb/ui")
    page.wait_for_selector(".lwb-row .lwb-row-name:not(:empty)")
    page.get_by_role("tab", name="Organize").click()
    page.wait_for_selector(".lwb-organize-item")
    assert sorted(verdicts(page)) == ["compatible", "compatible", "incompatible"]
    bad = page.locator(".lwb-organize-item.is-incompatible .lwb-organize-file")
    assert bad.text_content() == XSS_FILE  # the name as text, never markup
    page.click(".lwb-organize-apply")
    page.wait_for_selector(".lwb-organize-undo")
    page.wait_for_function("() => !document.querySelector('.lwb-organize-item')")  # the drop is empty now
    assert (lib / "lora_0_ünï" / "lora 0 ünï.safetensors").exists()
    assert (lib / "lora_0_ünï" / "config.yaml").exists()
    assert (lib / "_incompatible" / XSS_FILE).exists()
    page.click(".lwb-organize-reconcile-btn")
    page.wait_for_selector(".lwb-organize-reconcile.is-ok")
    page.screenshot(path=str(tmp_path / "organize.png"))
    page.click(".lwb-organize-undo")
    page.wait_for_function("() => document.querySelectorAll('.lwb-organize-item').length === 3")
    assert (lib / "lora 0 ünï.safetensors").exists() and (lib / XSS_FILE).exists()
    assert not (lib / "lora_0_ünï").exists()
