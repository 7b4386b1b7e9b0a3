import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from typing import Literal

import pytest
import yaml

from reprokit.config import ConfigError, from_dict, load_config, parse_overrides, save_config, to_dict


@dataclass
class ModelCfg:
    depth: int = 2
    width: int = 8
    act: Literal["gelu", "relu"] = "gelu"
    dropout: float | None = None
    sizes: list[int] = field(default_factory=lambda: [1, 2])


@dataclass
class Cfg:
    model: ModelCfg = field(default_factory=ModelCfg)
    lr: float = 1e-3
    name: str = "run"
    flag: bool = False


def test_defaults_file_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  depth: 6\nlr: 3e-4\n")
    cfg = load_config(Cfg, p, ["model.width=32", "model.sizes=[3,4]", "model.dropout=0.1", "flag=true"])
    assert cfg.model.depth == 6 and cfg.model.width == 32 and cfg.model.sizes == [3, 4]
    assert cfg.lr == pytest.approx(3e-4) and isinstance(cfg.lr, float)
    assert cfg.model.dropout == 0.1 and cfg.flag is True and cfg.model.act == "gelu"


def test_roundtrip(tmp_path):
    cfg = load_config(Cfg, None, ["model.depth=3"])
    save_config(cfg, tmp_path / "r.yaml")
    back = load_config(Cfg, tmp_path / "r.yaml")
    assert back == cfg
    assert from_dict(Cfg, to_dict(cfg)) == cfg
    assert yaml.safe_load((tmp_path / "r.yaml").read_text())["model"]["depth"] == 3


def test_unknown_key_names_key_and_valid_ones():
    with pytest.raises(ConfigError) as e:
        load_config(Cfg, None, ["model.detph=4"])
    msg = str(e.value)
    assert "model.detph" in msg and "depth" in msg and "width" in msg


def test_unknown_key_in_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("lrr: 1\n")
    with pytest.raises(ConfigError, match="lrr"):
        load_config(Cfg, p)


@pytest.mark.parametrize("ov, match", [("model.depth=abc", "model.depth"), ("model.act=tanh", "tanh"),
                                       ("flag=3", "flag"), ("novalue", "key=value")])
def test_bad_values(ov, match):
    with pytest.raises(ConfigError, match=match):
        load_config(Cfg, None, [ov])


def test_parse_overrides_nested():
    assert parse_overrides(["a.b.c=1", "a.d=x", "e=null"]) == {"a": {"b": {"c": 1}, "d": "x"}, "e": None}


def test_cli_bad_key_exits_2_and_writes_nothing(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent("""
        from dataclasses import dataclass
        from reprokit.config import load_config
        from reprokit.papercli import build_cli
        from reprokit.runs import RunDir

        @dataclass
        class C:
            lr: float = 0.1

        def train(args):
            cfg = load_config(C, args.config, args.overrides)
            RunDir(args.out_dir, cfg)

        main = build_cli("prog", {"train": train})
        main()
    """))
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, str(script), "train", "--out-dir", str(out), "lrx=1"],
                       capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert "lrx" in r.stderr and "lr" in r.stderr
    assert not out.exists()
    r = subprocess.run([sys.executable, str(script), "train", "--out-dir", str(out), "lr=0.5"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load((out / "config.yaml").read_text()) == {"lr": 0.5}


def test_fixed_length_tuple_field():
    @dataclass
    class T:
        betas: tuple[float, float] = (0.9, 0.95)

    cfg = load_config(T, None, ["betas=[0.8,0.99]"])
    assert cfg.betas == (0.8, 0.99) and isinstance(cfg.betas[0], float)
    with pytest.raises(ConfigError, match="2 items"):
        load_config(T, None, ["betas=[0.8]"])
