import subprocess
import sys

from reprokit.cli import discover_papers, main


def test_repro_list_runs(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in discover_papers():
        assert name in out


def test_unknown_paper_exit_2(capsys):
    assert main(["run", "no-such-paper"]) == 2
    assert "unknown paper" in capsys.readouterr().err


def test_console_script_entry():
    r = subprocess.run([sys.executable, "-m", "reprokit.cli", "list"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


class _FakeEP:
    def __init__(self, name, fn):
        self.name, self._fn, self.dist, self.value = name, fn, None, f"fake:{name}"

    def load(self):
        return self._fn


def test_run_all_summarises_claims_and_failures(tmp_path, monkeypatch, capsys):
    import reprokit.cli as cli
    from reprokit.results import write_results

    def good(scale, out_dir=None, workers=1):
        return write_results(tmp_path / "good" / "results.json", paper="good", scale=scale, arms={"a": {}},
                             claims=[{"id": "x", "claim": "x", "status": "reproduced", "evidence": "e"},
                                     {"id": "y", "claim": "y", "status": "not reproduced", "evidence": "e"}])

    def bad(scale, out_dir=None, workers=1):
        raise RuntimeError("boom")

    monkeypatch.setattr(cli, "discover_papers", lambda: {"good": _FakeEP("good", good), "bad": _FakeEP("bad", bad)})
    assert cli.main(["all", "--scale", "smoke"]) == 1
    out = capsys.readouterr().out
    assert "| good | 1/2 |" in out and "| bad | FAILED |" in out and "boom" in out
