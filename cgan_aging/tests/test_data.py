"""Loaders on tiny files written here in exactly their formats (UTKFace, CACD, longitudinal folder),
their errors (unparseable names, ages outside every group, corrupt images, missing folders, no usable
pairs), and the pair sampler: only same-person adjacent-group pairs; negatives of different people."""

import numpy as np
import pytest
from PIL import Image

from cgan_aging.config import Cfg
from cgan_aging.data import (
    adjacent_pairs,
    batch_indices,
    load_cacd,
    load_longitudinal,
    load_train,
    load_utkface,
    parse_cacd,
    parse_longitudinal,
    parse_utkface,
    sample_negatives,
    sample_pairs,
)
from reprokit.config import load_config
from reprokit.errors import DataError, ShapeError


def _img(path, colour=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((10, 12, 3), colour, np.uint8)).save(path)


def _cfg(src, path, *ov):
    return load_config(Cfg, None, ["model.image_size=8", "model.d_depth=2", "model.num_groups=5", "data.groups=five",
                                   f"data.source={src}", f"data.path={path}", *ov])


def test_name_parsers():
    assert parse_utkface("26_0_1_20170116174525125.jpg") == 26
    assert parse_utkface("9_1_2_20161219204347420.jpg.chip.jpg") == 9
    assert parse_cacd("14_Aaron_Johnson_0001.jpg") == (14, "Aaron_Johnson")
    assert parse_longitudinal("001A02.JPG") == 2 and parse_longitudinal("img_35.png") == 35
    assert parse_longitudinal("001A43a.JPG") == 43
    for fn, bad in ((parse_utkface, "face_26.jpg"), (parse_cacd, "Aaron_Johnson.jpg"), (parse_longitudinal, "x.png")):
        with pytest.raises(DataError, match=bad.split(".")[0]):
            fn(bad)


def test_utkface(tmp_path):
    for i, age in enumerate((15, 25, 60)):
        _img(tmp_path / f"{age}_0_1_2017011617452512{i}.jpg.chip.jpg", 50 * i)
    d = load_utkface(_cfg("utkface", tmp_path))
    assert d.images.shape == (3, 3, 8, 8) and d.group.tolist() == [0, 1, 4]
    assert len(set(d.person.tolist())) == 3                             # no identity: every image its own person
    assert len(adjacent_pairs(d.person.numpy(), d.group.numpy())) == 0


def test_cacd(tmp_path):
    for f in ("15_Ann_Lee_0001.jpg", "24_Ann_Lee_0002.jpg", "33_Ann_Lee_0003.jpg", "25_Bob_0001.jpg",
              "45_Bob_0002.jpg"):
        _img(tmp_path / f)
    d = load_cacd(_cfg("cacd", tmp_path))
    assert d.group.tolist() == [0, 1, 1, 2, 3] and d.age.tolist() == [15, 24, 25, 33, 45]
    ann, bob = d.person[0].item(), d.person[2].item()
    assert d.person.tolist() == [ann, ann, bob, ann, bob]
    pairs = adjacent_pairs(d.person.numpy(), d.group.numpy())
    assert pairs.tolist() == [[0, 1], [1, 3]]                            # Bob's groups 1 and 3 are not adjacent


def test_longitudinal(tmp_path):
    for p, ages in (("001", (12, 23)), ("002", (35, 44, 47))):
        for a in ages:
            _img(tmp_path / p / f"{p}A{a:02d}.JPG")
    d = load_longitudinal(_cfg("longitudinal", tmp_path))
    assert d.images.shape[0] == 5 and d.group.tolist() == [0, 1, 2, 3, 3]
    assert sorted(map(tuple, adjacent_pairs(d.person.numpy(), d.group.numpy()).tolist())) == [(0, 1), (2, 3), (2, 4)]


def test_bad_input_errors(tmp_path):
    with pytest.raises(DataError, match="nope"):
        load_train(_cfg("cacd", tmp_path / "nope"))
    _img(tmp_path / "a" / "5_Kid_0001.jpg")                              # age 5: below the five-group split
    with pytest.raises(DataError, match=r"5_Kid_0001.jpg: age 5 is outside every age group"):
        load_cacd(_cfg("cacd", tmp_path / "a"))
    _img(tmp_path / "b" / "notaname.jpg")
    with pytest.raises(DataError, match="notaname.jpg: not a CACD name"):
        load_cacd(_cfg("cacd", tmp_path / "b"))
    _img(tmp_path / "c" / "30_Ann_0001.png")
    bad = tmp_path / "c" / "31_Ann_0002.png"
    _img(bad)
    bad.write_bytes(bad.read_bytes()[:20])                               # truncated PNG
    with pytest.raises(DataError, match="31_Ann_0002.png"):
        load_cacd(_cfg("cacd", tmp_path / "c"))
    # a longitudinal set without any adjacent pair: C-GAN cannot train, the age-only cGAN can
    for p, a in (("p1", 15), ("p2", 45)):
        _img(tmp_path / "d" / p / f"img_{a}.png")
    from cgan_aging.train import train

    with pytest.raises(DataError, match="no usable transition pairs"):
        train(_cfg("longitudinal", tmp_path / "d", "train.steps=1", "train.batch_size=2"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_pair_sampler_only_same_person_adjacent():
    rng = np.random.default_rng(0)
    person = rng.integers(0, 30, 300)
    group = rng.integers(0, 5, 300)
    pairs = adjacent_pairs(person, group)
    assert len(pairs) > 0
    assert (person[pairs[:, 0]] == person[pairs[:, 1]]).all()
    assert (group[pairs[:, 1]] == group[pairs[:, 0]] + 1).all()
    want = {(i, j) for i in range(300) for j in range(300) if person[i] == person[j] and group[j] == group[i] + 1}
    assert set(map(tuple, pairs.tolist())) == want                      # and every such pair is found
    drawn = sample_pairs(pairs, 64, rng)
    assert (person[drawn[:, 0]] == person[drawn[:, 1]]).all() and (group[drawn[:, 1]] - group[drawn[:, 0]] == 1).all()
    neg = sample_negatives(person, group, 64, rng)
    assert (person[neg[:, 0]] != person[neg[:, 1]]).all() and (group[neg[:, 1]] - group[neg[:, 0]] == 1).all()


def test_batches():
    with pytest.raises(ShapeError, match="batch_size"):
        batch_indices(4, 8, 0, 0, 1, 0)
    a, b = batch_indices(100, 4, 0, 0, 2, 7), batch_indices(100, 4, 0, 1, 2, 7)
    assert len(set(a) | set(b)) == 8 and np.array_equal(a, batch_indices(100, 4, 0, 0, 2, 7))
