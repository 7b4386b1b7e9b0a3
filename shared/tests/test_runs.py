import json

from reprokit.runs import MetricLogger, RunDir, progress, read_jsonl


def test_rundir_and_jsonl(tmp_path):
    run = RunDir(tmp_path / "r", config={"a": 1})
    assert (run.path / "config.yaml").read_text().strip() == "a: 1"
    with MetricLogger(run.path) as log:
        log.log(1, split="train", loss=0.5)
        log.log(2, split="val", loss=float("nan"))
    recs = read_jsonl(run.path / "metrics.jsonl")
    assert [r["step"] for r in recs] == [1, 2]
    assert recs[0]["loss"] == 0.5 and recs[1]["loss"] == "nan" and recs[1]["split"] == "val"
    for line in (run.path / "metrics.jsonl").read_text().splitlines():
        json.loads(line)


def test_progress_quiet_when_not_tty(capsys):
    assert list(progress(range(5), desc="x")) == list(range(5))
    assert capsys.readouterr().err == ""


def test_progress_prints_eta_lines_when_not_a_terminal(capsys):
    from reprokit.runs import progress

    assert list(progress(range(3), desc="train", every_s=0.0)) == [0, 1, 2]
    err = capsys.readouterr().err
    assert "train: 1/3" in err and "ETA" in err and "train: 3/3 done" in err


def test_exclusive_lock_says_who_it_waits_for(tmp_path, capsys):
    import os
    import subprocess
    import sys
    import threading
    import time

    from reprokit.runs import exclusive

    lock = tmp_path / "x.lock"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        lock.write_text(str(holder.pid))
        threading.Timer(1.0, holder.kill).start()  # the holder dies: its lock becomes stale
        t0 = time.time()
        with exclusive(lock, "the classifier", every_s=0.2, poll_s=0.1):
            assert lock.read_text() == str(os.getpid())
        assert time.time() - t0 >= 0.9
    finally:
        holder.kill()
        holder.wait()
    assert not lock.exists()
    err = capsys.readouterr().err
    assert f"waiting for the classifier: {lock} is held by pid {holder.pid}" in err
    assert err.count("waiting for") >= 2  # said periodically, not once
