"""``medrun report`` writes into a folder and removes pages it wrote before: it can never remove anything else,
whatever its state file says, and never writes into a folder it did not make."""

import json
import os

from medrun.artifacts.report.render import STATE, build


def test_an_edited_state_file_cannot_make_the_report_delete_anything_else(make_run, runs, data, tmp_path):
    make_run(runs, data)
    out = tmp_path / "report"
    build(runs, out, verify=False)
    victims = [tmp_path / "victim.html", out / "notes.html", out / "runs" / "keep.txt"]
    for v in victims:
        v.parent.mkdir(parents=True, exist_ok=True)
        v.write_text("precious")
    outside = tmp_path / "outside.html"
    outside.write_text("precious")
    (out / "runs" / "link.html").symlink_to(outside)
    state = json.loads((out / STATE).read_text())
    for rel in ("../victim.html", str(tmp_path / "victim.html"), "runs/../../victim.html", "notes.html",
                "runs/keep.txt", "runs/link.html", "assets/report.js", "index.html/.."):
        state["pages"][rel] = "x"
    (out / STATE).write_text(json.dumps(state))
    res = build(runs, out, verify=False)
    assert res["removed"] == []
    assert all(v.read_text() == "precious" for v in [*victims, outside])
    assert (out / "runs" / "link.html").is_symlink() and (out / "assets" / "report.js").is_file()


def test_a_symlinked_out_folder_and_a_runs_folder_are_refused(make_run, runs, data, tmp_path, cli):
    make_run(runs, data)
    real = tmp_path / "elsewhere"
    real.mkdir()
    (real / "data.csv").write_text("precious")
    link = tmp_path / "link"
    link.symlink_to(real)
    empty_in_run = next(runs.glob("ad-lite/train-*")) / "figures" / "new"
    empty_in_run.mkdir(parents=True)
    for target in (link, runs, runs / "ad-lite", empty_in_run):
        before = sorted(os.walk(target, followlinks=True))
        r = cli("report", "--runs-dir", runs, "--out", target)
        assert r.code == 2 and "Traceback" not in r.err, r.err
        assert sorted(os.walk(target, followlinks=True)) == before
