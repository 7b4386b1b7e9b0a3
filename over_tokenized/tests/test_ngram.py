"""n-gram ids (Eqs. 1-3, Algorithm 1) against exact big-integer arithmetic; moduli; document boundaries."""

import math

import pytest
import torch

from overtok.config import OECfg
from overtok.ngram import check_moduli, history_lengths, is_prime, make_hash_spec, ngram_rows, table_moduli
from reprokit.config import ConfigError


def brute_force_rows(ids, hist, spec):
    """Python big integers: sum_j x_{t-j} V^j over the window, then mod m_s (+ the table offset)."""
    B, T = ids.shape
    out = torch.zeros(B, T, spec.num_tables, dtype=torch.int64)
    for b in range(B):
        for t in range(T):
            for s, (order, mod, off) in enumerate(zip(spec.orders, spec.moduli, spec.offsets)):
                v = 0
                for j in range(order):
                    if j <= int(hist[b, t]) and t - j >= 0:
                        v += int(ids[b, t - j]) * spec.vocab_size ** j
                out[b, t, s] = v % mod + off
    return out


@pytest.mark.parametrize("n, k, m, V, scheme", [
    (2, 1, 31, 64, "plus2i"),
    (3, 2, 101, 64, "plus2i"),
    (4, 1, 1_000_003, 50_257, "prime"),
    (5, 2, 2_000_000_000, 100_278, "prime"),      # V^5 ~ 1e25 overflows int64; moduli near 2^31
    (5, 1, 2_147_483_000, 50_280, "prime"),
])
def test_ngram_ids_match_big_integer_arithmetic(n, k, m, V, scheme):
    spec = make_hash_spec(OECfg(enabled=True, n=n, k=k, m=m, moduli=scheme), V)
    g = torch.Generator().manual_seed(n * 7 + k)
    ids = torch.randint(0, V, (3, 11), generator=g)
    ids[0, :4] = V - 1                                   # the largest terms
    ds = torch.zeros(3, 11, dtype=torch.bool)
    ds[1, 5] = True
    ds[2, 1] = ds[2, 2] = True
    hist = history_lengths((3, 11), spec.max_order, ds)
    assert torch.equal(ngram_rows(ids, hist, spec.tensors()), brute_force_rows(ids, hist, spec))


def test_table_order_follows_algorithm_1():
    spec = make_hash_spec(OECfg(enabled=True, n=4, k=2, m=101), 64)
    assert spec.orders == (2, 2, 3, 3, 4, 4)            # idx = (i - 2) k + j
    assert spec.moduli == tuple(101 + 2 * i for i in range(6))
    assert spec.offsets == tuple(sum(spec.moduli[:i]) for i in range(6))
    spec = make_hash_spec(OECfg(enabled=True, n=3, k=1, m=101, orders=[3]), 64)   # Table 3: 1-gram + 3-gram
    assert spec.orders == (3,) and spec.moduli == (101,)


def test_prime_moduli():
    mods = table_moduli(12_800_000, 4, "prime", 50_280)
    assert len(set(mods)) == 4 and all(is_prime(x) and x >= 12_800_000 for x in mods)
    assert all(math.gcd(x, 50_280) == 1 for x in mods)
    assert table_moduli(2, 3, "prime", 2048) == [3, 5, 7]            # 2 divides V: skipped


def test_positions_before_the_start_count_as_token_zero():
    spec = make_hash_spec(OECfg(enabled=True, n=3, k=1, m=1009), 64)
    ids = torch.tensor([[5, 9, 3]])
    rows = ngram_rows(ids, history_lengths((1, 3), 3), spec.tensors()) - torch.tensor(spec.offsets)
    assert rows[0, 0].tolist() == [5, 5]                # (0, 5) and (0, 0, 5) -> 5
    assert rows[0, 1].tolist() == [9 + 5 * 64, 9 + 5 * 64]
    assert rows[0, 2, 1] == (3 + 9 * 64 + 5 * 64 ** 2) % 1011


def test_window_stops_at_document_boundaries():
    spec = make_hash_spec(OECfg(enabled=True, n=3, k=2, m=101), 64)
    a = torch.tensor([[7, 8, 9, 10, 11, 12]])
    ds = torch.tensor([[False, False, False, True, False, False]])
    packed = ngram_rows(a, history_lengths((1, 6), 3, ds), spec.tensors())
    alone = ngram_rows(a[:, 3:], history_lengths((1, 3), 3), spec.tensors())
    assert torch.equal(packed[:, 3:], alone)            # the new document does not see the previous one
    assert not torch.equal(ngram_rows(a, history_lengths((1, 6), 3), spec.tensors())[:, 3:], alone)


def test_history_lengths():
    ds = torch.tensor([[False, False, True, False, False, False, True]])
    assert history_lengths((1, 7), 4, ds).tolist() == [[0, 1, 0, 1, 2, 3, 0]]
    assert history_lengths((1, 7), 2).tolist() == [[0, 1, 1, 1, 1, 1, 1]]


def test_moduli_sharing_a_factor_with_v_are_refused():
    with pytest.raises(ConfigError, match=r"model\.oe\.m=4096.*factor 2048"):
        make_hash_spec(OECfg(enabled=True, n=2, k=1, m=4096), 2048)
    with pytest.raises(ConfigError, match="factor 40 with the vocabulary size V=50280"):   # the paper's m
        make_hash_spec(OECfg(enabled=True, n=3, k=2, m=12_800_000), 50_280)
    with pytest.raises(ConfigError, match="table 1 has 9 rows.*factor 3"):              # a later table
        make_hash_spec(OECfg(enabled=True, n=2, k=2, m=7), 15)
    spec = make_hash_spec(OECfg(enabled=True, n=2, k=1, m=64 * 2048, allow_shared_factor=True), 2048)
    assert spec.moduli == (64 * 2048,)                  # Table 4's m = 64 V, on purpose
    with pytest.raises(ConfigError, match="V >= 2"):
        check_moduli([7], 1, False)
