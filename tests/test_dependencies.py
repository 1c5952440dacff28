"""Honest dependencies: install.py compares versions with requirements.txt, the library names a too-old sqlite-utils,
and without PyTorch the CLI says what to install and ``lorawb demo`` runs its header-only parts.

The no-torch runs are subprocesses whose ``sys.meta_path`` refuses ``torch`` (nothing is uninstalled)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
import types
from importlib.metadata import PackageNotFoundError
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("lorawb_install", ROOT / "install.py")
install = sys.modules["lorawb_install"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(install)

NO_TORCH = textwrap.dedent("""
    import sys

    class NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoTorch())
    from lorawb_core.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def one_lora(lib: Path) -> Path:
    from lorawb_core.samples import write_lora

    path = write_lora(lib / "a.safetensors", "sd15", te=False, rank=2, modules=("*down_blocks_1_*attn2_to_k",))
    os.utime(path, (1_700_000_000, 1_700_000_000))  # written long ago: no settle wait in the scan
    return path


def run_cli(*argv: str, prelude: str = NO_TORCH, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", prelude, *argv], capture_output=True, text=True, cwd=cwd,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(cwd or ROOT)},
                          timeout=300)


# ---- install.py -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("installed", "spec", "ok"), [
    ("4.2.1", ">=4", True), ("4.0", ">=4", True), ("3.38", ">=4", False), ("3.9.0", ">=3.9", True),
    ("3.8.6", ">=3.9", False), ("0.4.0", ">=0.4", True), ("1.26.4", ">=1.24,<2", True), ("2.0.1", ">=1.24,<2", False),
    ("6.0.1", "", True), ("1.2.3", "==1.2.3", True), ("1.2.4", "!=1.2.4", False),
])
def test_satisfies_with_and_without_packaging(monkeypatch, installed, spec, ok):
    assert install.satisfies(installed, spec) is ok
    monkeypatch.setitem(sys.modules, "packaging.specifiers", None)  # the fallback comparison
    assert install.satisfies(installed, spec) is ok


def test_parse_requirement_lines():
    assert install.parse_requirement("sqlite-utils>=4  # note") == ("sqlite-utils", ">=4")
    assert install.parse_requirement("aiohttp[speedups] >= 3.9") == ("aiohttp", ">= 3.9")
    assert install.parse_requirement("tqdm") == ("tqdm", "")
    assert install.parse_requirement("  # a comment") is None and install.parse_requirement("") is None


def fake_versions(versions: dict[str, str]):
    def version(name: str) -> str:
        if name not in versions:
            raise PackageNotFoundError(name)
        return versions[name]

    return version


def test_unmet_lists_missing_and_too_old_and_skips_torch():
    lines = ["# header", "torch>=99", "sqlite-utils>=4  # Migrations", "numpy>=1.24", "aiohttp>=3.9", "tqdm>=4.60"]
    unmet = install.unmet_requirements(lines, fake_versions({"sqlite-utils": "3.38", "numpy": "2.1.0",
                                                             "tqdm": "4.66.1"}))
    assert [(u.name, u.installed) for u in unmet] == [("sqlite-utils", "3.38"), ("aiohttp", None)]
    text = install.report(unmet)
    assert "sqlite-utils>=4 (3.38 is installed)" in text and "aiohttp>=3.9 (not installed)" in text
    assert f'{sys.executable} -m pip install "sqlite-utils>=4" "aiohttp>=3.9"' in text


def test_this_environment_meets_requirements_txt():
    assert install.unmet_requirements() == []


def test_requirements_txt_and_pyproject_agree():
    block = re.search(r"^dependencies = \[(.*?)^\]", (ROOT / "pyproject.toml").read_text(), re.S | re.M).group(1)
    project = re.findall(r'^\s*"([^"]+)"', block, re.M)  # (tomllib is Python >= 3.11 only)
    listed = [install.parse_requirement(line) for line in (ROOT / "requirements.txt").read_text().splitlines()]
    assert sorted(p for p in listed if p) == sorted(install.parse_requirement(d) for d in project)
    assert ("sqlite-utils", ">=4") in listed  # Migrations exist from 4.0


def test_main_reports_under_comfyui_and_installs_under_a1111(monkeypatch, capsys):
    unmet = [install.Unmet("sqlite-utils>=4", "sqlite-utils", "3.38")]
    monkeypatch.setattr(install, "unmet_requirements", lambda: unmet)
    monkeypatch.setitem(sys.modules, "launch", None)  # no A1111: report only
    install.main()
    err = capsys.readouterr().err
    assert "sqlite-utils>=4 (3.38 is installed)" in err and '-m pip install "sqlite-utils>=4"' in err
    calls = []
    monkeypatch.setitem(sys.modules, "launch", types.SimpleNamespace(run_pip=lambda *a: calls.append(a)))
    install.main()
    assert calls == [('install "sqlite-utils>=4"', "sqlite-utils>=4 for LoRA Weights Builder")]


# ---- a too-old sqlite-utils ---------------------------------------------------------------------------------
def test_old_sqlite_utils_is_named_with_the_upgrade_command(tmp_path):
    prelude = "import sqlite_utils\ndel sqlite_utils.Migrations\n" + NO_TORCH
    r = run_cli("search", "--db", str(tmp_path / "l.sqlite3"), prelude=prelude, cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert "needs sqlite-utils 4 or newer" in r.stderr and "pip install 'sqlite-utils>=4'" in r.stderr


# ---- without PyTorch ----------------------------------------------------------------------------------------
def test_demo_runs_its_header_parts_without_torch(tmp_path):
    r = run_cli("demo", "--dir", str(tmp_path / "demo"), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "No module named" not in r.stdout + r.stderr
    out = r.stdout
    assert " inspected, 0 failed" in out and "(headers only)" in out and " pending" in out
    assert "0 measured" in out and re.search(r"\n\d+ passed, 0 failed\n", out)  # the library check
    assert "skipped without PyTorch" in out and "pip install torch" in out
    assert "\ncompose " not in out  # the compose gate reads tensors: skipped, and said so
    assert "FLX-" in out  # search found the Flux samples by their headers


@pytest.mark.parametrize(("argv", "needle"), [
    (["inspect", "--blocks", "{lib}"], "lorawb inspect --blocks needs PyTorch"),
    (["compose", "SD1-CHR-001", "SD1-STY-001", "--db", "{db}"], "lorawb compose needs PyTorch"),
])
def test_torch_commands_say_what_to_install(tmp_path, argv, needle):
    lib = tmp_path / "lib"
    one_lora(lib)
    r = run_cli(*[a.format(lib=lib, db=tmp_path / "l.sqlite3") for a in argv], cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "pip install torch" in lines[0], r.stderr


def test_index_without_torch_reads_headers_and_says_so(tmp_path):
    lib = tmp_path / "lib"
    one_lora(lib)
    db = str(tmp_path / "l.sqlite3")
    r = run_cli("index", "--db", db, "--workers", "0", str(lib), cwd=tmp_path)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "1 new" in r.stdout and "0 measured, 1 pending" in r.stdout
    warning = [line for line in r.stderr.splitlines() if "PyTorch" in line]
    assert len(warning) == 1 and "pip install torch" in warning[0]
    r = run_cli("search", "--db", db, "--json", cwd=tmp_path)
    assert '"scan_state": "pending"' in r.stdout and '"error": null' in r.stdout  # never an error row for torch
    r = run_cli("inspect", str(lib / "a.safetensors"), cwd=tmp_path)
    assert r.returncode == 0 and "family     sd15" in r.stdout
