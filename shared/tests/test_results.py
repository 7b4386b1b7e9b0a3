import json

import pytest

from reprokit.results import (
    ResultsError,
    load_reported,
    load_results,
    record_wall_time,
    render_readme,
    write_results,
)

REPORTED = """
paper: "Toy"
arxiv: "0000.00001"
version: "v2"
tables:
  - id: "Table 1"
    title: "Main"
    columns: [FID, IS]
    rows:
      - {label: dense, values: {FID: 10.5, IS: 100.0}}
      - {label: moe, values: {FID: 9.25}}
      - {label: race, values: {FID: "2.10", IS: 7}}
    version: "v1"
    flags: [unverified]
"""


def _write(tmp_path, status="reproduced"):
    write_results(tmp_path / "results" / "small" / "results.json", paper="toy", scale="small",
                  arms={"dense": {"fid": 3.0}, "moe": {"fid": 2.5}},
                  tables={"main": {"columns": ["arm", "FID"], "rows": [["dense", 3.0], ["moe", 2.5]],
                                   "caption": "ours"}},
                  claims=[{"id": "c1", "claim": "moe beats dense", "status": status,
                           "evidence": "2.5 vs 3.0", "paper_ref": "Table 1"}],
                  protocol={"steps": 10}, config={"a": 1}, seeds=[0], wall_time_s=1.23)


def test_write_and_load(tmp_path):
    _write(tmp_path)
    res = load_results(tmp_path / "results" / "small" / "results.json")
    assert res["arms"]["moe"]["fid"] == 2.5
    assert res["environment"]["packages"]["torch"]
    assert res["wall_time_s"] == 1.2


def test_bad_claim_status_rejected(tmp_path):
    with pytest.raises(ResultsError, match="status"):
        _write(tmp_path, status="kind of")
    assert not (tmp_path / "results" / "small" / "results.json").exists()


def test_reported_reader(tmp_path):
    (tmp_path / "reported.yaml").write_text(REPORTED)
    rep = load_reported(tmp_path / "reported.yaml")
    t = rep["tables"][0]
    assert t["version"] == "v1" and t["flags"] == ["unverified"]
    (tmp_path / "reported.yaml").write_text(REPORTED.replace("IS: 100.0", "ISX: 100.0"))
    with pytest.raises(ResultsError, match="ISX"):
        load_reported(tmp_path / "reported.yaml")


def test_a_table_from_another_paper_names_its_own_source(tmp_path):
    from reprokit.results import render_reported_table

    (tmp_path / "reported.yaml").write_text(REPORTED)
    rep = load_reported(tmp_path / "reported.yaml")
    t = dict(rep["tables"][0], id="Follow-up Table 3", paper="Follow-up", arxiv="9999.00002", version="")
    rep["tables"].append(t)
    cap = render_reported_table(rep, "Follow-up Table 3").splitlines()[0]
    assert cap.startswith("*Follow-up (arXiv 9999.00002), Follow-up Table 3.") and "0000.00001" not in cap
    assert render_reported_table(rep, "Table 1").startswith("*Toy (arXiv 0000.00001v1), Table 1.")


def test_render_readme_roundtrip(tmp_path):
    (tmp_path / "reported.yaml").write_text(REPORTED)
    _write(tmp_path)
    (tmp_path / "results" / "bench.json").write_text(json.dumps(
        {"command": "toy bench", "cases": {"d=64": [{"name": "ours", "median_ms": 1.0, "ratio": 1.0}]}}))
    (tmp_path / "README.md").write_text(
        "# Toy\n\n<!-- BEGIN reported:Table 1 -->\nstale\n<!-- END reported:Table 1 -->\n\n"
        "<!-- BEGIN results:small/main -->\n<!-- END results:small/main -->\n"
        "<!-- BEGIN claims:small -->\n<!-- END claims:small -->\n<!-- BEGIN bench -->\n<!-- END bench -->\n")
    out = render_readme(tmp_path, write=True)
    assert "stale" not in out
    # paper numbers exactly as written: no rounding, quoted strings keep trailing zeros
    assert "| dense | 10.5 | 100.0 |" in out and "| moe | 9.25 | – |" in out
    assert "| race | 2.10 | 7 |" in out
    assert "unverified" in out and "0000.00001v1" in out
    assert "| moe | 2.50 |" in out and "**reproduced**" in out and "toy bench" in out
    assert render_readme(tmp_path) == out  # idempotent


def test_unbalanced_or_unknown_markers(tmp_path):
    (tmp_path / "README.md").write_text("<!-- BEGIN claims:small -->\nx\n")
    with pytest.raises(ResultsError, match="unbalanced"):
        render_readme(tmp_path)
    (tmp_path / "README.md").write_text("<!-- BEGIN foo:x -->\n<!-- END foo:x -->\n")
    with pytest.raises(ResultsError, match="unknown README marker"):
        render_readme(tmp_path)


@pytest.mark.parametrize("intro", ["**Our small reproduction has not been run yet.** It takes 2 h.\nMore.\n\n",
                                   "**Our small reproduction is in progress, not finished.** Resume with x.\n\n", ""])
def test_install_result_blocks_replaces_the_pending_paragraph(tmp_path, intro):
    from reprokit.results import NOT_YET_RUN, install_result_blocks

    head = "# Toy\n\n**Our small reproduction plan** is below in another section.\n\n## Reproduced\n\n"
    tail = "\n\n**Plan.** 10 runs.\n\n## Performance\n"
    (tmp_path / "README.md").write_text(head + intro + NOT_YET_RUN + tail)
    assert install_result_blocks(tmp_path, ["Ours:", "<!-- BEGIN claims:small -->\n<!-- END claims:small -->"])
    text = (tmp_path / "README.md").read_text()
    assert text == head + "Ours:\n\n<!-- BEGIN claims:small -->\n<!-- END claims:small -->" + tail
    assert not install_result_blocks(tmp_path, ["again"])            # idempotent: nothing pending any more


def test_record_wall_time_sums_the_invocations_of_its_own_plan_only(tmp_path):
    assert record_wall_time(tmp_path, 100.0, tag="st1000", runs_recorded=3, from_scratch=True) == 100.0
    assert record_wall_time(tmp_path, 50.0, tag="st2000", runs_recorded=1, from_scratch=True) == 50.0
    assert record_wall_time(tmp_path, 25.5, tag="st2000", runs_recorded=4, from_scratch=False) == 75.5
    inv = json.loads((tmp_path / "wall_time.json").read_text())["invocations"]
    assert [i["tag"] for i in inv] == ["st1000", "st2000", "st2000"]      # the earlier plan is kept
    assert [i["from_scratch"] for i in inv] == [True, True, False]
    # keep=False (a smoke run) starts the file afresh
    assert record_wall_time(tmp_path, 7.0, tag="st2000", runs_recorded=1, from_scratch=True, keep=False) == 7.0
    assert len(json.loads((tmp_path / "wall_time.json").read_text())["invocations"]) == 1
