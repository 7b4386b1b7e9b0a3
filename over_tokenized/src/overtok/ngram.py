"""Hashed n-gram ids of Over-Encoding (paper Eqs. 1-3, Algorithm 1) and the moduli of the tables.

Notation
--------
=========  ==========================================================  ===========
symbol     meaning                                                     shape
=========  ==========================================================  ===========
x          token ids of the input (base tokenizer, vocabulary V)        (B, T)
V          base vocabulary size; the polynomial base p = V (Eq. 2)       int
n          largest n-gram order; orders i in 2..n (or model.oe.orders)   int
k          slices per order (Eq. 4)                                      int
S          number of n-gram tables, k x (number of orders)               int
m_s        row count (modulus) of table s = idx                          (S,)
w_{s,j}    V^j mod m_s, the precomputed powers                           (S, n)
h          history length: preceding tokens of the same document        (B, T)
           inside the sequence, clipped to n - 1
=========  ==========================================================  ===========

Eq. 1-2: the i-gram ending at position t is f(x_t, x_{t-1}, ..., x_{t-i+1}) = sum_j x_{t-j} V^j, a bijection
onto [0, V^i). Eq. 3 takes it modulo the table's row count. We evaluate it modulo m_s term by term with the
precomputed powers w_{s,j} = V^j mod m_s and reduce after every product, so no intermediate exceeds
m_s^2 < 2^62 and int64 never overflows, whatever n is (the paper's direct evaluation overflows int64 once
V^n does, e.g. n = 4 at V = 10^5).

Positions before the sequence start count as token 0 (paper). Our choice, as in the independent
reproductions: the window also stops at document boundaries (a token of another document counts as 0), so
packed sequences never hash n-grams that straddle two documents. ``h`` encodes both rules: the token
x_{t-j} enters the sum only when j <= h_t.

Table numbering (Algorithm 1): table idx = (i - 2) k + j for order i and slice j, with m + 2 idx rows
("plus2i") or, with ``moduli: prime``, the idx-th prime >= m that does not divide V. All tables live in one
concatenated row space: table s occupies rows [offset_s, offset_s + m_s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from reprokit.config import ConfigError

from .config import MAX_MODULUS, OECfg


def is_prime(x: int) -> bool:
    """Deterministic primality by trial division (moduli are < 2^31, so at most ~23k divisions)."""
    if x < 2:
        return False
    if x % 2 == 0:
        return x == 2
    r = math.isqrt(x)
    return all(x % d for d in range(3, r + 1, 2))


def table_moduli(m: int, num_tables: int, scheme: str, vocab_size: int) -> list[int]:
    """Row counts m_s of the S tables: m + 2 s (Algorithm 1) or the s-th prime >= m not dividing V."""
    if scheme == "plus2i":
        return [m + 2 * s for s in range(num_tables)]
    if scheme == "prime":
        out, c = [], m
        while len(out) < num_tables:
            if is_prime(c) and vocab_size % c:
                out.append(c)
            c += 1
        if out[-1] > MAX_MODULUS:
            raise ConfigError(f"model.oe.m={m}: the prime moduli exceed 2**31 - 1")
        return out
    raise ConfigError(f"model.oe.moduli={scheme!r}: valid: plus2i, prime")


def check_moduli(moduli: list[int], vocab_size: int, allow_shared_factor: bool) -> None:
    """Every modulus coprime to V (paper Sec. 3.2 / Table 4: m a multiple of V destroys most of the gain)."""
    if vocab_size < 2:
        raise ConfigError(f"model.vocab_size={vocab_size}: need V >= 2 to hash n-grams")
    if any(mod < 2 for mod in moduli):
        raise ConfigError(f"model.oe.m: every table needs >= 2 rows, got moduli {moduli}")
    if allow_shared_factor:
        return
    for s, mod in enumerate(moduli):
        g = math.gcd(mod, vocab_size)
        if g != 1:
            raise ConfigError(
                f"model.oe.m={moduli[0]}: table {s} has {mod} rows, which shares the factor {g} with the "
                f"vocabulary size V={vocab_size}; use an m coprime to V (e.g. odd when V is even), "
                "model.oe.moduli=prime, or model.oe.allow_shared_factor=true to study the collision (Table 4)")


@dataclass(frozen=True)
class HashSpec:
    """Everything the hash needs, as Python ints (kernels take the tensor form from ``tensors``)."""

    vocab_size: int
    orders: tuple[int, ...]     # order i of each table s
    moduli: tuple[int, ...]     # m_s
    offsets: tuple[int, ...]    # first row of table s in the concatenated row space

    @property
    def num_tables(self) -> int:
        return len(self.orders)

    @property
    def max_order(self) -> int:
        return max(self.orders)

    @property
    def total_rows(self) -> int:
        return self.offsets[-1] + self.moduli[-1]

    def powers(self) -> list[list[int]]:
        """w_{s,j} = V^j mod m_s for j < max_order (Python big ints: exact)."""
        return [[pow(self.vocab_size, j, mod) for j in range(self.max_order)] for mod in self.moduli]

    def tensors(self, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        dev = torch.device(device) if device is not None else None
        return {
            "orders": torch.tensor(self.orders, dtype=torch.int64, device=dev),
            "moduli": torch.tensor(self.moduli, dtype=torch.int64, device=dev),
            "offsets": torch.tensor(self.offsets, dtype=torch.int64, device=dev),
            "powers": torch.tensor(self.powers(), dtype=torch.int64, device=dev),
        }


def make_hash_spec(oe: OECfg, vocab_size: int) -> HashSpec:
    """Tables in Algorithm 1's order: idx = (order position) k + slice."""
    orders = [o for o in oe.order_list() for _ in range(oe.k)]
    moduli = table_moduli(oe.m, len(orders), oe.moduli, vocab_size)
    check_moduli(moduli, vocab_size, oe.allow_shared_factor)
    offsets = [0]
    for mod in moduli[:-1]:
        offsets.append(offsets[-1] + mod)
    return HashSpec(vocab_size, tuple(orders), tuple(moduli), tuple(offsets))


def history_lengths(shape: tuple[int, int], max_order: int, doc_start: torch.Tensor | None = None,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """h_t = number of preceding tokens usable by the n-gram window at t, clipped to n - 1.

    The sequence start counts as a document start (earlier positions are token 0); ``doc_start`` (B, T)
    bool marks the first token of every further document inside the sequence.
    """
    B, T = shape
    pos = torch.arange(T, device=device).expand(B, T)                    # (B, T)
    if doc_start is None:
        h = pos
    else:
        starts = torch.where(doc_start.to(device=pos.device, dtype=torch.bool), pos, torch.zeros_like(pos))
        h = pos - torch.cummax(starts, dim=1).values                     # distance to the last start
    return h.clamp(max=max_order - 1).to(torch.int32)


def ngram_rows(ids: torch.Tensor, hist: torch.Tensor, spec_tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Rows of the concatenated n-gram tables for every token and table: (B, T, S) int64 (reference).

    row_s(t) = offset_s + sum_{j < order_s, j <= h_t} (x_{t-j} mod m_s) w_{s,j} mod m_s, reduced after
    every product (Eq. 2-3 with the precomputed powers).
    """
    orders, moduli = spec_tensors["orders"], spec_tensors["moduli"]
    offsets, powers = spec_tensors["offsets"], spec_tensors["powers"]
    B, T = ids.shape
    x = ids.to(torch.int64)
    acc = torch.zeros(B, T, len(moduli), dtype=torch.int64, device=ids.device)   # (B, T, S)
    for j in range(powers.shape[1]):
        xj = torch.zeros_like(x)
        if j < T:
            xj[:, j:] = x[:, : T - j]                                    # x_{t-j}; 0 before the start
        use = (hist >= j).unsqueeze(-1) & (orders > j)                   # (B, T, S)
        term = (xj.unsqueeze(-1) % moduli) * powers[:, j] % moduli
        acc = torch.where(use, (acc + term) % moduli, acc)
    return acc + offsets                                                 # (B, T, S)
