"""``racedit train|evaluate|sample|reproduce|bench|classifier|encode-latents``."""

from __future__ import annotations

import json
from pathlib import Path

from reprokit.config import load_config
from reprokit.papercli import build_cli

from .config import Cfg

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _cfg(args, run_dir: Path | None = None) -> Cfg:
    path = args.config
    if path is None and run_dir is not None and (run_dir / "config.yaml").is_file():
        path = str(run_dir / "config.yaml")
    return load_config(Cfg, path, list(args.overrides or []))


def cmd_train(args) -> int:
    from reprokit import dist as rdist

    from .train import train

    cfg = _cfg(args)
    res = train(cfg, args.out_dir or cfg.out_dir)
    rdist.print0(json.dumps({"steps": cfg.train.steps, **res["last"]}))
    rdist.cleanup()
    return 0


def cmd_evaluate(args) -> int:
    from .evaluate import evaluate
    from .train import load_trained

    run = Path(args.out_dir or _cfg(args).out_dir)
    cfg = _cfg(args, run)
    model, diff, step = load_trained(cfg, run, cfg.eval.use_ema)
    res = evaluate(model, diff, cfg, grid_path=run / "samples_grid.png")
    res["step"] = step
    (run / "eval.json").write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps({k: v for k, v in res.items() if not isinstance(v, list)}, indent=1))
    return 0


def cmd_sample(args) -> int:
    import torch

    from reprokit.plots import save_image_grid

    from .evaluate import generate
    from .train import load_trained

    run = Path(args.out_dir or _cfg(args).out_dir)
    cfg = _cfg(args, run)
    model, diff, _ = load_trained(cfg, run, cfg.eval.use_ema)
    n = 16
    samples, labels, _ = generate(model, diff, cfg, n, cfg.model.num_classes, cfg.eval.seed)
    out = run / "samples"
    out.mkdir(parents=True, exist_ok=True)
    for c in range(cfg.model.num_classes):
        save_image_grid(samples[labels == c], out / f"class_{c:03d}.png", nrow=8)
    torch.save({"n_per_class": n}, out / "meta.pt")
    print(f"wrote {cfg.model.num_classes} grids to {out}")
    return 0


def cmd_reproduce(args) -> int:
    from .reproduce import run_reproduce

    print(run_reproduce(args.scale, args.out_dir))
    return 0


def cmd_bench(args) -> int:
    from .bench import main as bench_main

    return bench_main([]) or 0


def cmd_classifier(args) -> int:
    import torch

    from .feature_net import train_feature_net

    torch.set_num_threads(1)
    print(json.dumps(train_feature_net(), indent=1))
    return 0


def cmd_encode_latents(args) -> int:
    import torch

    from .encode import encode_folder

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if not args.vae or not args.images or not args.out_dir:
        raise SystemExit("racedit encode-latents: error: --vae, --images and --out-dir are required")
    meta = encode_folder(args.vae, args.images, args.out_dir, image_size=args.image_size,
                         shard_size=args.shard_size, batch_size=args.batch_size, mode=args.mode,
                         seed=args.seed, device=device)
    print(json.dumps(meta, indent=1))
    return 0


def _encode_args(p) -> None:
    p.add_argument("--vae", help="local diffusers AutoencoderKL folder (config.json + weights)")
    p.add_argument("--images", help="ImageFolder of one split: <images>/<class>/<file>")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--shard-size", type=int, default=4096)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--mode", default="sample", choices=["sample", "mean"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto: cuda when available, else cpu")


main = build_cli(prog="racedit", commands={
    "train": cmd_train, "evaluate": cmd_evaluate, "sample": cmd_sample, "reproduce": cmd_reproduce,
    "bench": cmd_bench, "classifier": cmd_classifier, "encode-latents": cmd_encode_latents},
    extra_args={"encode-latents": _encode_args})

if __name__ == "__main__":
    main()
