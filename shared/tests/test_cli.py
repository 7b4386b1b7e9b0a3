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
