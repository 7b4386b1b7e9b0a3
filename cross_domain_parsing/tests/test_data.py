"""ProcParse (determinism, the label sets), flips swapping left/right labels, and the LIP-style and
target-folder loaders on tiny fixture files written here, including every bad-input error."""

import numpy as np
import pytest
import torch
from PIL import Image

from crossparse import procparse as pp
from crossparse.data import LIP20_TO_12, flip, label_map, load_labelled_folder, load_target_folder
from reprokit.config import ConfigError
from reprokit.errors import DataError


def test_procparse_is_deterministic_and_has_the_12_labels():
    a, la = pp.make_split("source", "train", 64, 64, 32, seed=3)
    b, lb = pp.make_split("source", "train", 64, 64, 32, seed=3)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert a.shape == (64, 3, 64, 32) and a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1
    assert set(np.unique(la)) == set(range(12))
    c, _ = pp.make_split("source", "test", 64, 64, 32, seed=3)
    assert not np.array_equal(a, c)


def test_outdoor_has_no_dress_and_targets_shift_appearance():
    _, lo = pp.make_split("outdoor", "test", 64, 64, 32, seed=3)
    assert pp.DRESS not in np.unique(lo)
    src, _ = pp.make_split("source", "test", 64, 64, 32, seed=3)
    for t in ("indoor", "movie", "runway"):
        x, _ = pp.make_split(t, "test", 64, 64, 32, seed=3)
        assert abs(float(x.mean()) - float(src.mean())) > 0.01 or abs(float(x.std()) - float(src.std())) > 0.01, t


def test_flip_swaps_left_and_right_labels():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    y = torch.zeros(2, 4, 6, dtype=torch.uint8)
    y[:, :, 0] = 4      # left-arm in the first column
    y[:, :, 1] = 7      # left-leg
    y[:, :, 2] = 10     # left-shoe
    y[:, :, 3] = 3      # upper-clothes (no side)
    y[0, 0, 5] = 255
    fx, fy = flip(x, y)
    assert torch.equal(fx, x.flip(-1))
    assert (fy[:, :, 5] == 5).all() and (fy[:, :, 4] == 8).all() and (fy[:, :, 3] == 11).all()
    assert (fy[:, :, 2] == 3).all() and fy[0, 0, 0] == 255
    assert torch.equal(flip(*flip(x, y))[1], y)


def test_procparse_flip_is_a_valid_render():
    """A flipped render's left arm lies on the other side of the body than the original's."""
    _, lab = pp.make_split("source", "test", 16, 64, 32, seed=5)
    cols = np.arange(32)
    for lbl in lab:
        if (lbl == 4).any() and (lbl == 5).any():
            assert cols[(lbl == 4).any(0)].mean() > cols[(lbl == 5).any(0)].mean()  # person's left = image right
            return
    pytest.fail("no render with both arms visible")


def _write(root, name, img_hw=(20, 10), labels=None, label_hw=None):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    H, W = img_hw
    Image.fromarray(np.full((H, W, 3), 120, np.uint8)).save(root / "images" / f"{name}.jpg")
    lh, lw = label_hw or img_hw
    lab = np.zeros((lh, lw), np.uint8) if labels is None else labels
    Image.fromarray(lab).save(root / "labels" / f"{name}.png")


def test_lip_loader_maps_20_to_12(tmp_path):
    lab = np.zeros((20, 10), np.uint8)
    lab[:5] = 13          # face
    lab[5:10] = 7         # coat -> upper-clothes (inferred)
    lab[10:15, :5] = 16   # left-leg
    lab[15:] = 255
    _write(tmp_path, "a", labels=lab)
    x, y = load_labelled_folder(tmp_path, (20, 10), label_map("lip20_to_12"), "lip20_to_12")
    assert x.shape == (1, 3, 20, 10) and y.shape == (1, 20, 10)
    assert (y[0, :5] == 1).all() and (y[0, 5:10] == 3).all() and (y[0, 10:15, :5] == 7).all() and (y[0, 15:] == 255).all()
    assert sum("inferred" in s for _, s in LIP20_TO_12.values()) >= 5


def test_label_outside_the_set_names_file_and_value(tmp_path):
    lab = np.zeros((20, 10), np.uint8)
    lab[0, 0] = 42
    _write(tmp_path, "bad", labels=lab)
    with pytest.raises(DataError, match=r"bad\.png.*42"):
        load_labelled_folder(tmp_path, (20, 10), label_map("lip20_to_12"), "lip20_to_12")


def test_size_mismatch_names_the_file(tmp_path):
    _write(tmp_path, "odd", img_hw=(20, 10), label_hw=(18, 10))
    with pytest.raises(DataError, match=r"odd\.png.*size"):
        load_labelled_folder(tmp_path, (20, 10), label_map("lip20_to_12"), "lip20_to_12")


def test_empty_target_folder(tmp_path):
    (tmp_path / "t").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_target_folder(tmp_path / "t", (20, 10))
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "t" / "x.png")
    assert load_target_folder(tmp_path / "t", (20, 10)).shape == (1, 3, 20, 10)
    with pytest.raises(DataError, match="no_such"):
        load_target_folder(tmp_path / "no_such", (20, 10))


def test_unknown_mapping_entry(tmp_path):
    p = tmp_path / "map.yaml"
    p.write_text("0: 0\n1: 17\n")
    with pytest.raises(DataError, match=r"map\.yaml.*17"):
        label_map(str(p))
    p.write_text("0: 0\nhat: 2\n")
    with pytest.raises(DataError, match="hat"):
        label_map(str(p))
    with pytest.raises(ConfigError, match="nope"):
        label_map("nope")
    p.write_text("0: 0\n2: 2\n")
    lab = np.zeros((20, 10), np.uint8)
    lab[3, 3] = 5                       # LIP upper-clothes, not in this user's table
    _write(tmp_path / "d", "u", labels=lab)
    with pytest.raises(DataError, match=r"u\.png.*value 5"):
        load_labelled_folder(tmp_path / "d", (20, 10), label_map(str(p)), str(p))
