"""``racedit train|evaluate|sample|reproduce|bench|classifier|encode-latents``: every command handler.

The only module of the member that builds a parser (``reprokit.papercli.build_cli``). Expected
failures raise ``reprokit.errors.UserError`` subclasses: the command exits 2 with one line naming the
culprit (``--debug`` adds the traceback).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from reprokit.config import ConfigError, load_config
from reprokit.errors import UserError
from reprokit.papercli import Command, build_cli

from .config import Cfg


def cmd_train(args) -> int:
    from reprokit import dist as rdist

    from .train import train

    cfg = load_config(Cfg, args.config, list(args.overrides))
    final = train(cfg, args.out_dir or cfg.out_dir)
    rdist.print0(json.dumps(final))
    rdist.cleanup()
    return 0


def _run_dir(args) -> Path:
    """``--run DIR``, else the ``out_dir`` of ``--config``."""
    if args.run:
        return Path(args.run)
    if args.config:
        return Path(load_config(Cfg, args.config, list(args.overrides)).out_dir)
    raise ConfigError("give the trained run folder: --run DIR (the --out-dir of `racedit train`)")


def cmd_evaluate(args) -> int:
    from .evaluate import evaluate
    from .train import load_run

    run = load_run(_run_dir(args), list(args.overrides))
    res = evaluate(run.model, run.diffusion, run.cfg, grid_path=run.path / "samples_grid.png")
    res["step"] = run.step
    (run.path / "eval.json").write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps({k: v for k, v in res.items() if not isinstance(v, list)}, indent=1))
    return 0


def cmd_sample(args) -> int:
    from reprokit.plots import save_image_grid

    from .evaluate import generate
    from .train import load_run

    run = load_run(_run_dir(args), list(args.overrides))
    ncls = run.cfg.model.num_classes
    samples, labels, _ = generate(run.model, run.diffusion, run.cfg, args.per_class, ncls, run.cfg.eval.seed)
    out = run.path / "samples"
    out.mkdir(parents=True, exist_ok=True)
    for c in range(ncls):
        save_image_grid(samples[labels == c], out / f"class_{c:03d}.png", nrow=8)
    print(f"wrote {ncls} grids of {args.per_class} samples to {out}")
    return 0


def _sample_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--per-class", type=int, default=16, help="samples per class (one PNG grid per class)")


def cmd_reproduce(args) -> int:
    from .reproduce import run_reproduce

    print(run_reproduce(args.scale, args.out_dir, workers=args.workers))
    return 0


def cmd_bench(args) -> int:
    from .bench import bench_cpu, bench_gpu

    if args.gpu:
        print(bench_gpu(args.tokens, args.out))
    else:
        print(bench_cpu(args.tokens, args.threads, args.repeats, args.out))
    return 0


def _bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tokens", type=int, default=4096, help="tokens N of one MoE layer call")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--repeats", type=int, default=7, help="timed repeats per candidate (median reported)")
    p.add_argument("--out", default=None, help="JSON output (default runs/bench.json, runs/bench_gpu.json with "
                                               "--gpu; results/bench.json refreshes the README table)")
    p.add_argument("--gpu", action="store_true", help="CUDA: Triton vs torch parity and timing")


def cmd_classifier(args) -> int:
    import torch

    from .feature_net import train_feature_net

    torch.set_num_threads(1)
    print(json.dumps(train_feature_net(args.seed), indent=1))
    return 0


def _classifier_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="classifier seed (eval.classifier_seed of the runs)")


def cmd_encode_latents(args) -> int:
    import torch

    from .encode import encode_folder

    if not args.out_dir:
        raise UserError("encode-latents needs --out-dir (the folder of the latent shards of this split)")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    meta = encode_folder(args.vae, args.images, args.out_dir, image_size=args.image_size,
                         shard_size=args.shard_size, batch_size=args.batch_size, mode=args.mode,
                         seed=args.seed, device=device)
    print(json.dumps(meta, indent=1))
    return 0


def _encode_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vae", required=True, help="local diffusers AutoencoderKL folder (config.json + weights)")
    p.add_argument("--images", required=True, help="ImageFolder of one split: <images>/<class>/<file>")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--shard-size", type=int, default=4096)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--mode", default="sample", choices=["sample", "mean"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto: cuda when available, else cpu")


main = build_cli(prog="racedit", description="Race-DiT (arXiv 2503.16057): train, evaluate and reproduce.", commands={
    "train": Command(cmd_train),
    "evaluate": Command(cmd_evaluate, out_dir=False, run=True,
                        help="evaluate a trained run (--run DIR; its own config.yaml is reloaded; overrides may "
                             "change evaluation keys only); writes DIR/eval.json"),
    "sample": Command(cmd_sample, out_dir=False, run=True, args=_sample_args,
                      help="write one sample grid per class from a trained run into DIR/samples/"),
    "reproduce": Command(cmd_reproduce, config=False),
    "bench": Command(cmd_bench, config=False, out_dir=False, args=_bench_args),
    "classifier": Command(cmd_classifier, config=False, out_dir=False, args=_classifier_args,
                          help="train (or reuse the cached) Fashion-MNIST classifier used for FID*/KID*"),
    "encode-latents": Command(cmd_encode_latents, config=False, args=_encode_args,
                              help="encode an ImageFolder split into SD-VAE latent shards (optional extra 'vae')"),
})

if __name__ == "__main__":
    main()
