"""The optional VAE-encoding extra: a local diffusers AutoencoderKL -> latent shards -> data.source=latents."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from racedit.cli import main
from racedit.config import DataCfg
from racedit.data import load_data
from racedit.encode import center_crop, encode_folder


@pytest.fixture(scope="module")
def tiny_vae(tmp_path_factory):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8, 8),
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        layers_per_block=1, norm_num_groups=4, sample_size=32, scaling_factor=0.5)
    path = tmp_path_factory.mktemp("vae")
    vae.save_pretrained(path)
    return path, vae.eval()


def _folder(root, n_per_class=(3, 2), size=(40, 52)):
    rng = np.random.default_rng(0)
    for c, n in enumerate(n_per_class):
        d = root / f"class_{c}"
        d.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


def test_center_crop_is_square_and_central():
    img = Image.fromarray(np.arange(40 * 80, dtype=np.uint8).reshape(40, 80) % 251).convert("RGB")
    assert center_crop(img, 16).shape == (16, 16, 3)
    assert center_crop(img, 40).shape == (40, 40, 3)


def test_encode_roundtrip_through_the_latent_reader(tiny_vae, tmp_path):
    path, vae = tiny_vae
    images = _folder(tmp_path / "imgs")
    out = tmp_path / "lat" / "train"
    meta = encode_folder(str(path), str(images), str(out), image_size=32, shard_size=3, batch_size=2,
                         mode="mean", progress=False)
    assert meta["n_images"] == 5 and meta["n_shards"] == 2 and meta["scaling_factor"] == 0.5
    assert meta["latent_shape"] == [4, 4, 4]
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "shard_00000.npz", "shard_00001.npz"]
    data = load_data(DataCfg(source="latents", path=str(tmp_path / "lat")), "train")
    assert data.images.shape == (5, 4, 4, 4) and data.labels.tolist() == [0, 0, 0, 1, 1]
    # the stored latents are the VAE's posterior mean times the checkpoint's scaling factor
    first = sorted((images / "class_0").iterdir())[0]
    x = torch.from_numpy(center_crop(Image.open(first).convert("RGB"), 32)).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        ref = vae.encode(x).latent_dist.mean * 0.5
    torch.testing.assert_close(data.images[0:1], ref, atol=2e-3, rtol=2e-3)  # float16 storage


def test_sample_mode_is_seeded(tiny_vae, tmp_path):
    path, _ = tiny_vae
    images = _folder(tmp_path / "imgs", n_per_class=(2,))
    a = encode_folder(str(path), str(images), str(tmp_path / "a"), image_size=32, progress=False, seed=3)
    encode_folder(str(path), str(images), str(tmp_path / "b"), image_size=32, progress=False, seed=3)
    encode_folder(str(path), str(images), str(tmp_path / "c"), image_size=32, progress=False, seed=4)
    za, zb, zc = (np.load(tmp_path / d / "shard_00000.npz")["latents"] for d in "abc")
    assert a["mode"] == "sample" and np.array_equal(za, zb) and not np.array_equal(za, zc)


def test_bad_inputs_are_clear_errors(tiny_vae, tmp_path):
    path, _ = tiny_vae
    with pytest.raises(FileNotFoundError, match="not a local diffusers AutoencoderKL"):
        encode_folder(str(tmp_path / "nope"), str(_folder(tmp_path / "i")), str(tmp_path / "o"), progress=False)
    (tmp_path / "empty" / "c").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="holds no images"):
        encode_folder(str(path), str(tmp_path / "empty"), str(tmp_path / "o"), progress=False)
    with pytest.raises(ValueError, match="multiple of 8"):
        encode_folder(str(path), str(tmp_path / "i"), str(tmp_path / "o"), image_size=30, progress=False)
    assert not (tmp_path / "o").exists()


def test_cli_writes_meta(tiny_vae, tmp_path):
    path, _ = tiny_vae
    images = _folder(tmp_path / "imgs", n_per_class=(1, 1))
    rc = main(["encode-latents", "--vae", str(path), "--images", str(images), "--out-dir", str(tmp_path / "o"),
               "--image-size", "32", "--device", "cpu"])
    assert rc == 0 and json.loads((tmp_path / "o" / "meta.json").read_text())["classes"] == ["class_0", "class_1"]
