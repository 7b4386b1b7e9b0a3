"""Diffusion objectives and samplers: rectified flow (velocity) and DDPM epsilon (DiT's linear betas).

Conventions: flow ``x_t = (1 - t) x0 + t * noise``, t in [0, 1] (t = 0 clean, t = 1 noise), target
``noise - x0``, the model sees ``1000 t``; DDPM integer t in [0, T), target the noise. In both, a
*larger* t is noisier (the paper's Fig. 6 "low t" = fine-detail steps).
"""

from __future__ import annotations

import torch

from .config import DiffusionCfg


class Diffusion:
    def __init__(self, cfg: DiffusionCfg):
        if cfg.kind not in ("flow", "ddpm"):
            raise ValueError(f"unknown diffusion kind {cfg.kind!r}; valid: flow, ddpm")
        self.cfg = cfg
        betas = torch.linspace(1e-4, 0.02, cfg.num_timesteps, dtype=torch.float64)
        self.alphas_cumprod = torch.cumprod(1 - betas, 0)

    def sample_t(self, n: int, gen: torch.Generator) -> torch.Tensor:
        if self.cfg.kind == "flow":
            return torch.rand(n, generator=gen)
        return torch.randint(0, self.cfg.num_timesteps, (n,), generator=gen).float()

    def model_t(self, t: torch.Tensor) -> torch.Tensor:
        return t * 1000.0 if self.cfg.kind == "flow" else t

    def noisy(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_t, training target)."""
        if self.cfg.kind == "flow":
            tt = t.view(-1, 1, 1, 1).to(x0.dtype)
            return (1 - tt) * x0 + tt * noise, noise - x0
        ab = self.alphas_cumprod.to(x0.device)[t.long()].view(-1, 1, 1, 1).to(x0.dtype)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise, noise

    def loss(self, model, x0, y, t, noise) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(MSE loss, model output (first C channels), target)."""
        xt, target = self.noisy(x0, t, noise)
        out = model(xt, self.model_t(t), y)[:, : x0.shape[1]]
        return ((out - target) ** 2).mean(), out, target

    @torch.no_grad()
    def sample(self, model, y: torch.Tensor, shape: tuple[int, ...], gen: torch.Generator,
               steps: int | None = None, cfg_scale: float | None = None, null_class: int | None = None,
               on_step=None) -> torch.Tensor:
        """Generate images for labels ``y``; classifier-free guidance when cfg_scale != 1 (doubles the
        batch with the null class). ``on_step(i, t)`` is called before every model call with t mapped to
        [0, 1] (1 = noise)."""
        steps = steps or self.cfg.sample_steps
        scale = self.cfg.cfg_scale if cfg_scale is None else cfg_scale
        device = y.device
        C = shape[1]
        x = torch.randn(shape, generator=gen).to(device)
        guided = scale != 1.0 and null_class is not None

        def pred(x, t_model):
            if not guided:
                return model(x, t_model, y)[:, :C]
            o = model(torch.cat([x, x]), torch.cat([t_model, t_model]),
                      torch.cat([y, torch.full_like(y, null_class)]))[:, :C]
            c, u = o.chunk(2)
            return u + scale * (c - u)

        n = shape[0]
        if self.cfg.kind == "flow":
            ts = torch.linspace(1.0, 0.0, steps + 1)
            for i in range(steps):
                if on_step:
                    on_step(i, float(ts[i]))
                v = pred(x, torch.full((n,), float(ts[i]) * 1000.0, device=device))
                x = x + (ts[i + 1] - ts[i]) * v
            return x.clamp(-1, 1)
        T = self.cfg.num_timesteps
        tsteps = torch.linspace(T - 1, 0, steps).round().long().unique_consecutive()
        ac = self.alphas_cumprod
        for i, t in enumerate(tsteps.tolist()):
            if on_step:
                on_step(i, t / T)
            ab = float(ac[t])
            ab_prev = float(ac[tsteps[i + 1]]) if i + 1 < len(tsteps) else 1.0
            eps = pred(x, torch.full((n,), float(t), device=device))
            x0 = ((x - (1 - ab) ** 0.5 * eps) / ab ** 0.5).clamp(-1, 1)
            if i + 1 == len(tsteps):
                x = x0
                break
            beta = 1 - ab / ab_prev
            mean = (ab_prev ** 0.5 * beta / (1 - ab)) * x0 + ((1 - beta) ** 0.5 * (1 - ab_prev) / (1 - ab)) * x
            var = beta * (1 - ab_prev) / (1 - ab)
            x = mean + var ** 0.5 * torch.randn(x.shape, generator=gen).to(device)
        return x.clamp(-1, 1)
