"""Static checks of web/: api.js and the server's route table agree both ways, only api.js knows URLs, nothing
builds HTML from strings, one entry module has side effects, imports resolve, no god files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lorawb_core.server.app import WEB_DIR
from lorawb_core.server.routes import ROUTES

JS = sorted(WEB_DIR.rglob("*.js"))
API = WEB_DIR / "api.js"
ENTRY = WEB_DIR / "lorawb.js"
MAX_LINES = 600


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"(^|[^:\\])//[^\n]*", r"\1", text)


def test_api_js_routes_match_the_server_table_both_ways():
    text = API.read_text()
    table = re.search(r"export const ROUTES = Object\.freeze\(\{(.*?)\}\);", text, re.S)
    assert table, "api.js must declare its routes in one ROUTES table"
    js = set(re.findall(r'\w+: \["(GET|POST|PUT|PATCH|DELETE)", "(/lorawb/[^"]+)"\]', table.group(1)))
    py = {(r.method, r.path) for r in ROUTES}
    assert js == py, {"only in api.js": sorted(js - py), "only on the server": sorted(py - js)}
    assert re.search(r'export const EVENTS_PATH = "/lorawb/events";', text)


def test_only_api_js_knows_urls():
    for path in JS:
        if path == API:
            continue
        code = strip_comments(path.read_text())
        assert "/lorawb/" not in code, f"{path.name} names a lorawb URL; only api.js may"
        for call in ("fetch(", "fetchApi(", "EventSource(", "XMLHttpRequest", "WebSocket("):
            assert call not in code, f"{path.name} calls {call} directly; go through api.js"


@pytest.mark.parametrize("path", JS, ids=lambda p: str(p.relative_to(WEB_DIR)))
def test_no_html_from_strings(path):
    code = strip_comments(path.read_text())
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                 "createContextualFragment", "DOMParser"):
        assert sink not in code, f"{path.name} uses {sink}: build DOM nodes with textContent (dom.js h())"


@pytest.mark.parametrize("path", JS, ids=lambda p: str(p.relative_to(WEB_DIR)))
def test_modules_are_side_effect_free_except_the_entry(path):
    code = strip_comments(path.read_text())
    if path == ENTRY:
        assert "app.registerExtension(" in code and "../../scripts/app.js" in code
        return
    assert "registerExtension" not in code and "../../scripts/" not in code, path.name
    top = [line for line in code.splitlines() if line and not line[0].isspace()]
    allowed = ("import ", "export ", "const ", "function ", "async function ", "class ", "let ", "}", ")", "]")
    odd = [line for line in top if not line.startswith(allowed)]
    assert not odd, f"{path.name} runs code at import time: {odd[:3]}"


@pytest.mark.parametrize("path", JS, ids=lambda p: str(p.relative_to(WEB_DIR)))
def test_relative_imports_resolve_to_exported_names(path):
    code = path.read_text()
    for names, target in re.findall(r'import\s*\{([^}]*)\}\s*from\s*"(\.[^"]+)"', code):
        if target.startswith("../../scripts/"):
            continue  # ComfyUI's own modules
        module = (path.parent / target).resolve()
        assert module.is_file(), f"{path.name} imports {target}, which does not exist"
        exported = module.read_text()
        for name in (n.strip().split(" as ")[0] for n in names.split(",") if n.strip()):
            assert re.search(rf"export (const|function|async function|class|let) {name}\b", exported), \
                f"{path.name} imports {name} from {target}, which does not export it"


MAX_CORE_LINES = 400
# core modules over MAX_CORE_LINES, each with its reason; remove an entry when its module is split
CORE_EXCEPTIONS = {
    "library/scan.py": 520,  # the two scan phases and their entry points; split planned (issue 8 item 7)
}


def test_no_god_files():
    for path in JS:
        lines = len(path.read_text().splitlines())
        assert lines < MAX_LINES, f"{path.name} has {lines} lines (keep modules under {MAX_LINES})"
    core = Path(__file__).resolve().parents[1] / "lorawb_core"
    for path in sorted(core.rglob("*.py")):
        rel = path.relative_to(core).as_posix()
        lines = len(path.read_text().splitlines())
        limit = CORE_EXCEPTIONS.get(rel, MAX_CORE_LINES)
        assert lines <= limit, f"lorawb_core/{rel} has {lines} lines (keep modules at most {limit})"
    for rel in CORE_EXCEPTIONS:
        assert (core / rel).is_file(), f"lorawb_core/{rel} is gone: remove it from CORE_EXCEPTIONS"


def test_standalone_page_references_exist():
    html = (WEB_DIR / "ui.html").read_text()
    assert '<base href="static/">' in html and "{{nonce}}" in html
    for ref in re.findall(r'(?:href|from)\s*=?\s*"(\./[^"]+|panel/[^"]+)"', html):
        assert (WEB_DIR / ref).resolve().is_file(), ref
    assert "innerHTML" not in html


def test_every_route_and_event_is_documented_in_the_readme():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("## Web UI and HTTP API")
    section = readme[start:readme.index("\n## ", start + 5)]
    for r in ROUTES:
        assert f"{r.path}`" in section, f"README 'Web UI and HTTP API' does not document {r.method} {r.path}"
    for text in ("lorawb.scan_progress", "lorawb.scan_done", "lorawb.scan_error", "/lorawb/events", "/lorawb/ui",
                 "X-Lorawb-Token", "LORAWB_TOKEN", "lorawb serve"):
        assert text in section, text
