"""User data loaders on tiny files written here in exactly their formats, and their errors."""

import numpy as np
import pytest
from PIL import Image

from reprokit.config import load_config
from reprokit.errors import DataError, ShapeError
from ugan.config import Cfg
from ugan.data import batch_indices, load_celeba, load_folder, load_train, pixel_prototypes


def _img(path, w, h, colour):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), colour, np.uint8)).save(path)


def _cfg(*ov):
    return load_config(Cfg, None, ["model.image_size=8", "model.d_depth=2", *ov])


def _folder(root, domains=("young", "old", "older"), n=2):
    for k, d in enumerate(domains):
        for i in range(n):
            _img(root / d / f"{i}.png", 12, 10, 40 * (k + 1))


def test_folder_loader(tmp_path):
    _folder(tmp_path)
    d = load_folder(_cfg("data.source=folder", f"data.path={tmp_path}", "model.num_domains=3"))
    assert d.images.shape == (6, 3, 8, 8) and d.images.min() >= -1 and d.images.max() <= 1
    assert d.names == ["old", "older", "young"]                        # sorted folder names
    assert d.domain.tolist() == [0, 0, 1, 1, 2, 2] and d.labels.sum(1).tolist() == [1.0] * 6
    assert np.isclose(float(d.images[0, 0, 0, 0]), 80 / 127.5 - 1, atol=1e-6)
    P = pixel_prototypes(d, 3)
    assert P.shape == (3, 3, 8, 8)


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "nope")):
        load_folder(_cfg("data.source=folder", f"data.path={tmp_path / 'nope'}", "model.num_domains=3"))
    _folder(tmp_path)
    with pytest.raises(DataError, match="3 domain folders .* model.num_domains=4"):
        load_folder(_cfg("data.source=folder", f"data.path={tmp_path}", "model.num_domains=4"))
    bad = tmp_path / "old" / "1.png"
    bad.write_bytes(bad.read_bytes()[:20])                               # truncated PNG
    with pytest.raises(DataError, match="1.png"):
        load_folder(_cfg("data.source=folder", f"data.path={tmp_path}", "model.num_domains=3"))


def _celeba(root, n=3):
    names = ["5_o_Clock_Shadow", "Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young"]
    lines = [str(n), " ".join(names)]
    for i in range(n):
        f = f"{i:06d}.jpg"
        _img(root / "images" / f, 178, 218, 30 * (i + 1))
        vals = ["1" if (i + j) % 2 else "-1" for j in range(len(names))]
        lines.append(f"{f} " + " ".join(vals))
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")


def test_celeba_loader(tmp_path):
    _celeba(tmp_path)
    cfg = _cfg("data.source=celeba", f"data.path={tmp_path}", "data.label_mode=multi", "model.num_domains=3",
               "data.domains=[Black_Hair, Male, Young]")
    d = load_celeba(cfg)
    assert d.images.shape == (3, 3, 8, 8) and d.names == ["Black_Hair", "Male", "Young"]
    assert d.labels.tolist() == [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]
    assert (d.domain == -1).all()


def test_celeba_errors(tmp_path):
    base = ["data.source=celeba", "data.label_mode=multi", "model.num_domains=2"]
    with pytest.raises(DataError, match="list_attr_celeba.txt"):
        load_celeba(_cfg(*base, f"data.path={tmp_path}", "data.domains=[Male, Young]"))
    _celeba(tmp_path)
    with pytest.raises(DataError, match="Bald"):
        load_celeba(_cfg(*base, f"data.path={tmp_path}", "data.domains=[Male, Bald]"))
    (tmp_path / "images" / "000001.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    with pytest.raises(DataError, match="000001.jpg"):
        load_celeba(_cfg(*base, f"data.path={tmp_path}", "data.domains=[Male, Young]"))


def test_sizes_and_batches():
    cfg = _cfg("data.num_train=16", "model.num_domains=4")
    cfg.model.image_size = 10                                             # bypassing the config check
    with pytest.raises(ShapeError, match="image_size=10"):
        load_train(cfg)
    with pytest.raises(ShapeError, match="batch_size"):
        batch_indices(4, 8, 0, 0, 1, 0)
    a = batch_indices(100, 4, 0, 0, 2, 7)
    b = batch_indices(100, 4, 0, 1, 2, 7)
    assert len(set(a) | set(b)) == 8                                      # ranks see disjoint samples
    assert np.array_equal(a, batch_indices(100, 4, 0, 0, 2, 7))
