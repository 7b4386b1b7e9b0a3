"""plot_curves and save_image_grid write PNGs of the expected size."""

from __future__ import annotations

import json

import matplotlib.image
import numpy as np
import pytest
import torch

from reprokit.plots import make_image_grid, plot_curves, save_image_grid


def test_image_grid_size_and_pixels(tmp_path) -> None:
    imgs = -torch.ones(10, 3, 8, 6)  # black in [-1, 1]
    imgs[1] = 1.0  # white
    path = save_image_grid(imgs, tmp_path / "g" / "grid.png", nrow=4, padding=2)
    arr = matplotlib.image.imread(path)
    # 10 images, 4 per row -> 3 rows: H = 3*(8+2)+2 = 32, W = 4*(6+2)+2 = 34
    assert arr.shape[:2] == (32, 34)
    assert arr[2, 2, :3].tolist() == [0.0, 0.0, 0.0]  # first image, top-left pixel
    assert arr[2, 2 + 8, :3].tolist() == [1.0, 1.0, 1.0]  # second image is white
    assert arr[0, 0, :3].tolist() == [1.0, 1.0, 1.0]  # padding


def test_grid_grayscale_and_unit_range() -> None:
    imgs = np.full((3, 1, 4, 4), 0.5)
    g = make_image_grid(imgs, nrow=8, value_range=(0, 1), padding=0)
    assert g.shape == (4, 12, 3) and g.dtype == np.uint8
    assert np.all(g == 128)
    with pytest.raises(ValueError):
        make_image_grid(np.zeros((2, 2, 4, 4)))


def test_plot_curves_from_jsonl_and_records(tmp_path) -> None:
    p = tmp_path / "runA" / "metrics.jsonl"
    p.parent.mkdir()
    with open(p, "w") as f:
        for s in range(5):
            f.write(json.dumps({"step": s, "split": "train", "loss": 1.0 / (s + 1)}) + "\n")
            f.write(json.dumps({"step": s, "split": "val", "loss": 2.0, "acc": 0.1 * s}) + "\n")
    recs = [{"step": s, "loss": 0.5, "acc": 0.2} for s in range(5)]
    out = plot_curves([p, recs], ys=["loss", "acc"], out=tmp_path / "c.png", title="t",
                      filter={"split": "val"}, dpi=50)
    arr = matplotlib.image.imread(out)
    assert arr.shape[:2] == (int(3.6 * 50), int(10.0 * 50))  # figsize (5 * len(ys), 3.6) at 50 dpi
    assert arr[..., :3].std() > 0.01  # something was drawn
    with pytest.raises(ValueError):
        plot_curves([p, recs], labels=["only one"], out=tmp_path / "x.png")
