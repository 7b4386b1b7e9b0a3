"""Bench: training-step time and peak memory of the connection variants vs Pre-Norm, and ours vs the PyPI
``hyper-connections`` package at an identical model (same sublayers, same sizes, same inputs).

CPU: ``hyperfrac bench`` -> results/bench.json (README "Performance"; ``--out FILE`` writes elsewhere).
GPU: ``hyperfrac bench --gpu`` -> results/bench_gpu.json: Triton vs torch parity, then timing.
The step is forward + backward + AdamW update, timed by reprokit.bench.compare (interleaved, median).
Timing functions only; the command line (options, README re-render) is in cli.py.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelCfg
from .model import MLP, Attention, DecoderLM, Norm

PKG_DIR = Path(__file__).resolve().parents[2]
SIZE = dict(hidden=128, depth=4, heads=4, context=128, vocab_size=96)
BATCH, SEQ = 8, 128
# the regime users train at (issue #9): a 2-layer slice of a d = 512 / 1024 model, same batch and sequence.
# Targets at d = 512: DHCx4 <= 1.10x and DFCx4 <= 1.03x Pre-Norm, DFCx4 saved activations <= 1.5x Pre-Norm.
WIDE = [dict(hidden=512, depth=2, heads=8, context=128, vocab_size=96),
        dict(hidden=1024, depth=2, heads=16, context=128, vocab_size=96)]


class PeerLM(nn.Module):
    """Our OLMo-style LM with the residuals replaced by ``hyper_connections.HyperConnections`` (lucidrains).

    Same sublayers and sizes as :class:`~hyperfrac.model.DecoderLM`; streams folded into the batch as that
    package does. ``num_fracs > 1`` is its Frac-Connections mode (known not to start as Pre-Norm; timing only).
    """

    def __init__(self, cfg: ModelCfg, num_streams: int, num_fracs: int = 1):
        super().__init__()
        from hyper_connections import get_init_and_expand_reduce_stream_functions
        init_hc, self.expand, self.reduce = get_init_and_expand_reduce_stream_functions(
            num_streams, num_fracs=num_fracs, disable=False)
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden)
        layers = []
        for i in range(cfg.depth):
            layers.append(init_hc(dim=cfg.hidden, branch=Attention(cfg, causal=True), layer_index=2 * i))
            layers.append(init_hc(dim=cfg.hidden, branch=MLP(cfg), layer_index=2 * i + 1))
        self.layers = nn.ModuleList(layers)
        self.final_norm = Norm(cfg.hidden, cfg.norm, cfg.norm_affine, cfg.norm_eps)

    def forward(self, idx):
        h = self.expand(self.embed(idx))
        for layer in self.layers:
            h = layer(h)
        return self.final_norm(self.reduce(h)) @ self.embed.weight.t()


def _step_fn(model: nn.Module, x: torch.Tensor):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    V = model.embed.weight.shape[0]

    def step():
        loss = F.cross_entropy(model(x).reshape(-1, V), x.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()
    return step


def saved_activation_mb(model: nn.Module, x: torch.Tensor) -> float:
    """MB of tensors autograd saves for the backward during one forward (deduplicated by storage)."""
    seen, total = set(), 0

    def pack(t):
        nonlocal total
        key = (t.untyped_storage().data_ptr(), t.dtype)
        if key not in seen and t.device.type != "meta":
            seen.add(key)
            total += t.untyped_storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return total / 2**20


def _compiled_step(conn: str, x):
    """Step of our model with the connection ops run through torch.compile (set for the call only)."""
    from .kernels import set_compiled
    step = _step_fn(_ours(conn), x)

    def fn():
        set_compiled(True)
        try:
            return step()
        finally:
            set_compiled(False)
    return fn


def _ours(conn: str, impl: str = "torch", device="cpu", size: dict | None = None) -> nn.Module:
    torch.manual_seed(0)
    return DecoderLM(ModelCfg(connection=conn, impl=impl, **(size or SIZE))).to(device)


def run_cpu(repeats: int = 15, threads: int = 1, compiled: bool = True, out: str | Path | None = None) -> Path:
    from reprokit.bench import compare, write_bench

    torch.set_num_threads(threads)
    x = torch.randint(0, SIZE["vocab_size"], (BATCH, SEQ))
    cases = {}
    variants = {"Pre-Norm": "prenorm", "SHCx4": "shcx4", "DHCx4": "dhcx4", "DFCx4": "dfcx4"}
    cands = {k: _step_fn(_ours(v), x) for k, v in variants.items()}
    if compiled:
        cands.update({"DHCx4 (compiled conn. ops)": _compiled_step("dhcx4", x),
                      "DFCx4 (compiled conn. ops)": _compiled_step("dfcx4", x)})
    cases["variants vs Pre-Norm (ours)"] = compare(cands, baseline="Pre-Norm", warmup=3, repeats=repeats)
    for size in WIDE:
        cands = {k: _step_fn(_ours(v, size=size), x) for k, v in variants.items()}
        cases[f"d={size['hidden']}, {size['depth']} layers: variants vs Pre-Norm (ours)"] = compare(
            cands, baseline="Pre-Norm", warmup=1, repeats=max(3, repeats // 3))
        del cands
    cfg = ModelCfg(**SIZE)
    torch.manual_seed(0)
    peer_hc, peer_fc = PeerLM(cfg, 4), PeerLM(cfg, 1, 4)
    cands = {"hyper-connections DHCx4": _step_fn(peer_hc, x), "ours DHCx4": _step_fn(_ours("dhcx4"), x)}
    if compiled:
        cands["ours DHCx4 (compiled conn. ops)"] = _compiled_step("dhcx4", x)
    cases["DHCx4: ours vs hyper-connections"] = compare(cands, baseline="hyper-connections DHCx4", warmup=3,
                                                        repeats=repeats)
    cands = {"hyper-connections FCx4 (num_fracs=4)": _step_fn(peer_fc, x), "ours DFCx4": _step_fn(_ours("dfcx4"), x)}
    if compiled:
        cands["ours DFCx4 (compiled conn. ops)"] = _compiled_step("dfcx4", x)
    cases["DFCx4: ours vs hyper-connections"] = compare(cands, baseline="hyper-connections FCx4 (num_fracs=4)",
                                                        warmup=3, repeats=repeats)
    act = {k: round(saved_activation_mb(_ours(v), x), 2) for k, v in variants.items()}
    act["hyper-connections DHCx4"] = round(saved_activation_mb(peer_hc, x), 2)
    act["hyper-connections FCx4"] = round(saved_activation_mb(peer_fc, x), 2)
    from importlib.metadata import version
    extra = {"model": SIZE, "wide_models": WIDE, "batch": BATCH, "seq": SEQ, "threads": threads,
             "step": "forward + backward + AdamW step", "hyper_connections_version": version("hyper-connections"),
             "saved_activation_mb": act, "peak_mem_note": "CPU peak = growth of the process RSS high-water mark "
             "during the timed calls (0 once the allocator has cached the memory); see saved_activation_mb"}
    out = write_bench(Path(out) if out else PKG_DIR / "results" / "bench.json", cases,
                      command=f"uv run --group bench hyperfrac bench --repeats {repeats}"
                      + ("" if compiled else " --no-compile"), extra=extra, packages=("hyper-connections",))
    print("saved activations (MB):", act)
    for case, rows in cases.items():
        print(case)
        for r in rows:
            print(f"  {r.name:40s} {r.median_ms:8.1f} ms  x{r.ratio:.2f}  peak {r.peak_mem_mb}")
    return out


def run_gpu(repeats: int = 30, out: str | Path | None = None) -> Path:
    """Parity (Triton vs torch, one forward/backward of every variant) then step timing on CUDA."""
    from reprokit.bench import compare, write_bench

    if not torch.cuda.is_available():
        from reprokit.errors import UserError
        raise UserError("bench --gpu needs a CUDA device (torch.cuda.is_available() is False)")
    dev = "cuda"
    x = torch.randint(0, SIZE["vocab_size"], (BATCH, SEQ), device=dev)
    parity = {}
    for conn in ("shcx4", "dhcx4", "dhcx4-notanh", "sfcx4", "dfcx4", "dhcx2"):
        a, b = _ours(conn, "torch", dev), _ours(conn, "triton", dev)
        b.load_state_dict(a.state_dict())
        with torch.no_grad():
            for m in (a, b):
                for c in m.trunk.connections():
                    if c.W is not None:
                        c.W.copy_(torch.linspace(-0.3, 0.3, c.W.numel(), device=dev).view_as(c.W))
        la, lb = a(x).float().square().mean(), b(x).float().square().mean()
        la.backward()
        lb.backward()
        gmax = max((pa.grad - pb.grad).abs().max().item() for pa, pb in zip(a.parameters(), b.parameters(),
                                                                                strict=True) if pa.grad is not None)
        parity[conn] = {"loss_abs_diff": abs(la.item() - lb.item()), "max_grad_abs_diff": gmax}
    cases = {}
    for conn in ("dhcx4", "dfcx4"):
        cases[f"{conn}: triton vs torch (CUDA)"] = compare(
            {"Pre-Norm": _step_fn(_ours("prenorm", "torch", dev), x),
             f"{conn} torch": _step_fn(_ours(conn, "torch", dev), x),
             f"{conn} triton": _step_fn(_ours(conn, "triton", dev), x)}, baseline="Pre-Norm", repeats=repeats)
    return write_bench(Path(out) if out else PKG_DIR / "results" / "bench_gpu.json", cases,
                       command="uv run hyperfrac bench --gpu", extra={"parity": parity, "model": SIZE})
