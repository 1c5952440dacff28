"""The per-module merge math (``merge.lowrank.decompose``) against a dense float64 SVD of the same sum, on the cases
where a factorisation from Grams could go wrong: repeated and cancelling LoRAs (rank-deficient stacks), an all-zero
sum, more kept values than the sum has (zero padding), wide and tall modules and a spread of singular values."""

from __future__ import annotations

import pytest
import torch

from lorawb_core.merge.lowrank import RankRule, decompose


def _pair(m, n, r, gen, scale=1.0, decay=0.5):
    u = torch.randn(m, r, generator=gen, dtype=torch.float64) * (decay ** torch.arange(r, dtype=torch.float64))
    return u * scale, torch.randn(r, n, generator=gen, dtype=torch.float64)


def _dense_svd(pairs, m, n):
    total = torch.zeros(m, n, dtype=torch.float64)
    for u, d in pairs:
        total += u @ d
    return total, torch.linalg.svdvals(total)


@pytest.mark.parametrize("m,n", [(320, 768), (1280, 320), (64, 64)])
@pytest.mark.parametrize("rank", [None, 4, 16])
def test_the_factors_are_the_svd_optimum_of_the_sum(m, n, rank):
    gen = torch.Generator().manual_seed(m + n + (rank or 0))
    pairs = [_pair(m, n, 8, gen, 0.8), _pair(m, n, 8, gen, -0.4, 0.2), _pair(m, n, 4, gen, 1e-3)]
    total, s = _dense_svd(pairs, m, n)
    dec = decompose(pairs, [], (m, n), RankRule(rank=rank), conv=False)
    k = dec.kept
    assert k == (20 if rank is None else rank)
    assert torch.allclose(torch.tensor(dec.singular_values[:20], dtype=torch.float64), s[:20], rtol=1e-9,
                          atol=1e-12 * float(s[0]))
    got = dec.up @ dec.down
    optimum = float(s[k:].square().sum().sqrt())  # Eckart–Young: the best rank-k error
    assert abs(float((total - got).norm()) - optimum) <= 1e-9 * float(s[0]) * max(1, k)
    if rank is None:  # concat is the exact sum
        assert float((total - got).abs().max()) <= 1e-10 * float(total.abs().max())
    assert dec.error == pytest.approx(optimum / float(total.norm()), rel=1e-6, abs=1e-12)


def test_repeated_and_cancelling_loras_are_rank_deficient_and_exact():
    gen = torch.Generator().manual_seed(7)
    u, d = _pair(256, 512, 8, gen)
    u2, d2 = _pair(256, 512, 8, gen)
    # the same LoRA twice (0.5 + 0.5) plus one cancelled by its negative: the exact sum is u·d, rank 8 of 32
    pairs = [(0.5 * u, d), (0.5 * u, d), (u2, d2), (-u2, d2)]
    dec = decompose(pairs, [], (256, 512), RankRule(), conv=False)
    assert dec.available == 32 and dec.kept == 32  # concat keeps every slot: the output rank is what was asked
    assert float((dec.up @ dec.down - u @ d).abs().max()) <= 1e-10 * float((u @ d).abs().max())
    assert all(v == 0.0 for v in dec.singular_values[8:])  # the 24 empty directions pad with zeros, not noise
    assert torch.count_nonzero(dec.up[:, 8:]) == 0 and torch.count_nonzero(dec.down[8:]) == 0


def test_an_all_zero_sum_gives_zero_factors_of_the_asked_rank():
    gen = torch.Generator().manual_seed(3)
    u, d = _pair(64, 96, 4, gen)
    dec = decompose([(u, d), (-u, d)], [], (64, 96), RankRule(rank=4), conv=False)
    assert dec.energy == 0 and dec.kept == 4 and dec.error == 0
    assert torch.count_nonzero(dec.up) == 0 and torch.count_nonzero(dec.down) == 0


def test_factors_scaled_far_apart_keep_their_product():
    """One file with ups ×1e-9 and downs ×1e9 beside a balanced one: the product of each is what counts."""
    gen = torch.Generator().manual_seed(11)
    u1, d1 = _pair(128, 256, 4, gen)
    u2, d2 = _pair(128, 256, 4, gen)
    pairs = [(u1 * 1e-9, d1 * 1e9), (u2, d2)]
    total, s = _dense_svd(pairs, 128, 256)
    dec = decompose(pairs, [], (128, 256), RankRule(), conv=False)
    assert float((dec.up @ dec.down - total).abs().max()) <= 1e-9 * float(total.abs().max())


def test_a_well_conditioned_gram_takes_cholesky_and_a_deficient_one_the_eigen_path():
    from lorawb_core.merge.lowrank import _gram_factor

    gen = torch.Generator().manual_seed(5)
    x = torch.randn(300, 12, generator=gen, dtype=torch.float64)
    for cols, path in ((x, "cholesky"), (torch.cat([x, x[:, :4]], dim=1), "eigen")):
        f = _gram_factor(cols.T @ cols)
        q = cols @ f.inverse_r(torch.eye(f.r.shape[0], dtype=torch.float64))  # Q = X·r⁺
        assert torch.allclose(q.T @ q, torch.eye(q.shape[1], dtype=torch.float64), atol=1e-9)  # orthonormal
        assert torch.allclose(q @ f.r, cols, atol=1e-9 * float(cols.abs().max()))  # X = Q·r
        square_upper = f.r.shape == (cols.shape[1], cols.shape[1]) and torch.equal(f.r, f.r.triu())
        assert square_upper == (path == "cholesky") and f.r.shape[0] == (12 if path == "eigen" else cols.shape[1])
