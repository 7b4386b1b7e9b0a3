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
