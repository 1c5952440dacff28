"""lorawb merge: exactness against dense float64 sums on files written by the real libraries (LyCORIS, peft), the
rank rules, metadata and hashes, the library entry, and bad input (a clear error, nothing written)."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lycoris")

from lorawb_core.errors import IncompatibleStack, InvalidTensor, LorawbError, UsageError  # noqa: E402
from lorawb_core.hashes import hash_file  # noqa: E402
from lorawb_core.inspection import inspect_structure  # noqa: E402
from lorawb_core.merge import MergeInput, OutputExists, RankRule, merge_loras  # noqa: E402
from lorawb_core.reader import read_structure  # noqa: E402
from lorawb_core.tensors import open_tensors  # noqa: E402

try:
    from tests import real_writers as rw
except ImportError:  # pragma: no cover - run from tests/
    import real_writers as rw

WRITERS = {
    "a": dict(algo="locon", seed=1),
    "b": dict(algo="locon", seed=2),
    "tucker": dict(algo="locon", use_tucker=True, seed=3),
    "loha": dict(algo="loha", seed=4),
    "lokr": dict(algo="lokr", factor=4, seed=5),
    "full": dict(algo="full", seed=6),
    "dora": dict(algo="dora", seed=7),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the dense reference math (conftest.py)


@pytest.fixture(scope="module")
def loras(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("merge_inputs")
    out = {}
    for name, kw in WRITERS.items():
        (base / name).mkdir()
        out[name] = rw.write_lycoris(base / name, weight_name=f"{name}.safetensors", **kw).path
    (base / "xl").mkdir()
    out["sdxl"] = rw.write_peft_sdxl(base / "xl").path
    return out


def sample(path: Path, step: int = 6) -> set[str]:
    """Every ``step``-th target of a file plus the first of each block: dense float64 ΔWs of every SD1.5 module
    (3×3 convs of 1280×11520) would make each test take minutes on CI."""
    mods = sorted(inspect_structure(path).modules, key=lambda m: str(m.target))
    first = {}
    for m in mods:
        first.setdefault(m.block, str(m.target))
    return {str(m.target) for m in mods[::step]} | set(first.values())


def deltas(path: Path, only: set[str] | None = None) -> dict[str, tuple[object, torch.Tensor]]:
    """target → (module, dense scale·ΔW flattened to (out, in·k·k)) in float64, through each adapter's own math."""
    an = inspect_structure(path)
    out = {}
    with open_tensors(an.structure) as ld:
        for m in an.modules:
            if only is not None and str(m.target) not in only:
                continue
            a = m.adapter
            d = a.delta(lambda p, a=a: ld.get(a.params[p].key))
            out[str(m.target)] = (m, d.reshape(d.shape[0], -1).clone())
    return out


def expected_sum(terms: list[tuple[Path, float, dict[str, float]]],
                 only: set[str]) -> dict[str, tuple[str | None, torch.Tensor]]:
    """Σ strength·weight(block)·ΔW per target in ``only``, dense float64 (weights: block → weight, default 1)."""
    total: dict[str, tuple[str | None, torch.Tensor]] = {}
    for path, strength, weights in terms:
        for target, (m, d) in deltas(path, only).items():
            c = strength * weights.get(m.block, 1.0)
            prev = total.get(target)
            total[target] = (m.block, d * c if prev is None else prev[1] + d * c)
    return total


def merged(path: Path, only: set[str]) -> dict[str, torch.Tensor]:
    return {t: d for t, (_, d) in deltas(path, only).items()}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / max(float(b.norm()), 1e-300))


def optimum(d: torch.Tensor, k: int) -> torch.Tensor:
    u, s, vt = torch.linalg.svd(d, full_matrices=False)
    return (u[:, :k] * s[:k]) @ vt[:k]


def test_concat_is_the_exact_weighted_sum_with_block_weights_and_negative_strength(loras, tmp_path):
    out = tmp_path / "concat.safetensors"
    rep = merge_loras([f"{loras['a']}:0.7", MergeInput(str(loras["b"]), -0.4, None, "IN04=0.5, OUT05=0, default=1")],
                      out, dtype="fp32")
    only = sample(loras["a"])
    want = expected_sum([(loras["a"], 0.7, {}), (loras["b"], -0.4, {"IN04": 0.5, "OUT05": 0.0})], only)
    got = merged(out, only)
    assert set(got) == set(want) and {b for b, _ in want.values()} >= {"IN04", "OUT05", "BASE"}
    worst = max(rel(got[t], d) for t, (_, d) in want.items())
    assert worst < 1e-6, worst
    assert rep.error < 1e-12 and all(m.rank == m.available for m in rep.modules)
    assert len(rep.modules) == len(inspect_structure(loras["a"]).modules)
    assert {m.rank for m in rep.modules if m.block not in ("OUT05", None)} == {8}  # rank 4 + rank 4
    assert {m.rank for m in rep.modules if m.target == "diffusion_model.out.2"} == {4}  # conv_out: 4 channels
    assert {m.rank for m in rep.modules if m.block == "OUT05"} == {4}  # b has weight 0 there


def test_truncated_rank_lands_on_the_svd_optimum_and_reports_its_exact_error(loras, tmp_path):
    out = tmp_path / "r3.safetensors"
    rep = merge_loras([str(loras["a"]), f"{loras['b']}:0.5"], out, rule=RankRule(rank=3), dtype="fp32")
    only = sample(loras["a"], 12)
    want = expected_sum([(loras["a"], 1.0, {}), (loras["b"], 0.5, {})], only)
    got = merged(out, only)
    by_target = {m.target: m for m in rep.modules}
    for target in want:
        d = want[target][1]
        best = optimum(d, 3)
        assert rel(got[target], best) < 1e-5, target
        assert by_target[target].error == pytest.approx(rel(best, d), rel=1e-6, abs=1e-9)
    assert rep.ranks == {3: len(rep.modules)}


def test_conv_rank_and_tucker_modules(loras, tmp_path):
    out = tmp_path / "conv.safetensors"
    rep = merge_loras([str(loras["a"]), str(loras["tucker"])], out, dtype="fp32")
    convs = {str(m.target) for m in inspect_structure(loras["tucker"]).modules if "mid" in m.adapter.params}
    assert convs, "the Tucker writer wrote no lora_mid"
    only = set(sorted(convs)[::3]) | sample(loras["a"], 20)
    want = expected_sum([(loras["a"], 1.0, {}), (loras["tucker"], 1.0, {})], only)
    got = merged(out, only)
    assert max(rel(got[t], want[t][1]) for t in want) < 1e-6
    out2 = tmp_path / "conv2.safetensors"
    rep = merge_loras([str(loras["a"]), str(loras["tucker"])], out2, rule=RankRule(rank=6, conv_rank=2))
    sd = read_structure(out2).tensors
    for m in rep.modules:
        down = sd[f"{m.key}.lora_down.weight"].shape
        assert down[0] == (2 if len(down) == 4 and down[2] * down[3] > 1 else 6), m.key
        assert sd[f"{m.key}.lora_up.weight"].dtype == "F16"


def test_loha_lokr_and_full_inputs_merge_exactly(loras, tmp_path):
    out = tmp_path / "mixed_algos.safetensors"
    rep = merge_loras([f"{loras['loha']}:0.5", str(loras["lokr"]), str(loras["full"])], out, dtype="fp32")
    only = sample(loras["loha"], 12) | {str(m.target) for m in inspect_structure(loras["full"]).modules}
    want = expected_sum([(loras["loha"], 0.5, {}), (loras["lokr"], 1.0, {}), (loras["full"], 1.0, {})], only)
    got = merged(out, only)
    assert set(got) == set(want)
    assert max(rel(got[t], d) for t, (_, d) in want.items()) < 1e-6
    assert any(m.dense for m in rep.modules) and not all(m.dense for m in rep.modules)
    out2 = tmp_path / "mixed_r4.safetensors"
    merge_loras([f"{loras['loha']}:0.5", str(loras["lokr"])], out2, rule=RankRule(rank=4), dtype="fp32")
    only = sample(loras["loha"], 25)
    want = expected_sum([(loras["loha"], 0.5, {}), (loras["lokr"], 1.0, {})], only)
    got = merged(out2, only)
    for target in want:
        assert rel(got[target], optimum(want[target][1], 4)) < 1e-5, target


def _reaches(method: str, param: float, s: list[float], j: int) -> bool:
    """Whether keeping the first ``j`` singular values satisfies the dynamic rule (kohya resize's definitions)."""
    if method == "sv_fro":
        return math.sqrt(sum(x * x for x in s[:j]) / sum(x * x for x in s)) >= param - 1e-12
    if method == "sv_cumulative":
        return sum(s[:j]) / sum(s) >= param - 1e-12
    return j == len(s) or s[j] < s[0] / param


@pytest.mark.parametrize(("method", "param"), [("sv_fro", 0.9), ("sv_ratio", 4.0), ("sv_cumulative", 0.8)])
def test_dynamic_rank_keeps_the_fewest_values_that_reach_the_target(loras, tmp_path, method, param):
    out = tmp_path / f"{method}.safetensors"
    rep = merge_loras([str(loras["a"]), str(loras["b"])], out, rule=RankRule(dynamic=method, param=param))
    only = sample(loras["a"], 25)
    want = expected_sum([(loras["a"], 1.0, {}), (loras["b"], 1.0, {})], only)
    for m in (m for m in rep.modules if m.target in only):
        s = torch.linalg.svdvals(want[m.target][1])[:m.available].tolist()
        k = m.rank
        assert _reaches(method, param, s, k) and (k == 1 or not _reaches(method, param, s, k - 1)), (m.key, k, s)
    meta = read_structure(out).metadata
    assert meta["ss_network_dim"] == "Dynamic" if len(rep.ranks) > 1 else meta["ss_network_dim"] == str(rep.modules[0].rank)


def test_metadata_hashes_and_alpha(loras, tmp_path):
    out = tmp_path / "meta.safetensors"
    rep = merge_loras([f"{loras['a']}:0.7", f"{loras['b']}:0.3"], out, rule=RankRule(rank=4), metadata="merge")
    st = read_structure(out)
    meta = st.metadata
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "4"
    assert meta["modelspec.merged_from"] == "a, b"
    assert meta["modelspec.title"] == "meta" and meta["ss_network_module"] == "networks.lora"
    h = hash_file(out, st.header_bytes)
    assert meta["sshs_model_hash"] == h.addnet and rep.hashes["autov2"] == h.autov2
    assert rep.hashes["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    info = json.loads(meta["lorawb_merge"])
    assert [s["sha256"] for s in info["sources"]] == [hashlib.sha256(p.read_bytes()).hexdigest()
                                                     for p in (loras["a"], loras["b"])]
    assert [s["strength_model"] for s in info["sources"]] == [0.7, 0.3]
    an = inspect_structure(out)
    assert {m.adapter.alpha for m in an.modules} == {4.0} and an.report.family.family == "sd15"
    assert an.report.format == "kohya" and not an.report.unknown_keys
    import safetensors.torch

    assert len(safetensors.torch.load_file(str(out))) == 3 * len(rep.modules)  # the safetensors library reads it


def _refused(out: Path, exc_type, match: str, *args, **kwargs) -> str:
    with pytest.raises(exc_type, match=match) as err:
        merge_loras(*args, out, **kwargs)
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".partial")]
    return str(err.value)


def test_bad_input_is_refused_and_nothing_is_written(loras, tmp_path):
    out = tmp_path / "bad.safetensors"
    msg = _refused(out, IncompatibleStack, "sdxl LoRA|sd15 LoRA", [str(loras["a"]), str(loras["sdxl"])])
    assert "rest of the stack" in msg
    msg = _refused(out, IncompatibleStack, "DoRA", [str(loras["a"]), str(loras["dora"])])
    assert "magnitude" in msg
    _refused(out, IncompatibleStack, "base model", [str(loras["dora"])])
    _refused(out, UsageError, "use concat", [str(loras["a"]), str(loras["b"])], rule=RankRule(rank=64))
    _refused(out, UsageError, "neither a file", ["/nonexistent/x.safetensors"])
    with pytest.raises(UsageError):
        RankRule(dynamic="sv_fro", param=1.5)
    # NaN in a factor
    import safetensors.torch

    sd = safetensors.torch.load_file(str(loras["a"]))
    key = next(k for k in sd if k.endswith("lora_down.weight"))
    sd[key] = sd[key].clone()
    sd[key][0, 0] = float("nan")
    nan_file = tmp_path / "nan.safetensors"
    safetensors.torch.save_file(sd, str(nan_file))
    msg = _refused(out, InvalidTensor, "NaN", [str(loras["b"]), str(nan_file)])
    assert key.rsplit(".", 2)[0] in msg
    # an existing output is never replaced
    out.write_bytes(b"keep me")
    with pytest.raises(OutputExists, match="never overwrites"):
        merge_loras([str(loras["a"])], out)
    assert out.read_bytes() == b"keep me"


def test_disk_full_mid_write_leaves_no_partial_file(loras, tmp_path, monkeypatch):
    import errno

    from lorawb_core.merge import writer

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(writer.os, "fsync", full)
    out = tmp_path / "full.safetensors"
    msg = _refused(out, LorawbError, "disk full", [str(loras["a"])])
    assert "nothing was written" in msg


def test_merged_file_is_indexed_at_once_and_ids_resolve(loras, tmp_path):
    import shutil

    from lorawb_core.library import get_lora, open_library, scan

    root = tmp_path / "loras"
    root.mkdir()
    for name in ("a", "b"):
        shutil.copy(loras[name], root / f"{name}.safetensors")
        t = 1_700_000_000 * 10**9
        os.utime(root / f"{name}.safetensors", ns=(t, t))
    with open_library(tmp_path / "lib.sqlite3") as db:
        scan(db, [str(root)], workers=0)
        ids = [r[0] for r in db.execute("SELECT stable_id FROM loras ORDER BY file_name")]
        rep = merge_loras([f"{ids[0]}:0.8", f"{ids[1]}@OUTD"], root / "ab.safetensors", rule=RankRule(rank=4), db=db)
        assert rep.stable_id and rep.stable_id not in ids
        entry = get_lora(db, rep.stable_id)
        assert entry.scan_state == "ready" and entry.path == str(root / "ab.safetensors")
        assert entry.sha256 == rep.hashes["sha256"]
    meta = read_structure(root / "ab.safetensors").metadata
    assert meta["modelspec.merged_from"] == ", ".join(ids)
    assert json.loads(meta["lorawb_merge"])["sources"][1]["weights"] == "OUTD"
