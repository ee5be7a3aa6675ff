"""``medrun report``: the data each page is built from, incremental rewriting, and the CLI. The pages themselves are
checked in a real browser in ``test_report_browser.py``; nothing here compares HTML snapshots."""

import json
import os
from pathlib import Path

import pytest
import yaml

from medrun.artifacts.report import data as rdata
from medrun.artifacts.report.render import STATE, build


def add_files(path: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)


def sealed(make_run, runs, data, *, files=None, **kw) -> Path:
    """A complete run with extra files (curves, per-case table, figures) sealed in."""
    from medrun.artifacts import RunDir

    path = make_run(runs, data, status="running", **kw)
    add_files(path, files or {})
    RunDir(path).seal()
    return path


CURVES = "epoch,step,train_loss,val_dice\n0,4,0.9,\n0,4,,0.40\n1,8,0.5,\n1,8,,0.62\n"
CASES = "case,dice,hd95\ncase_a,0.91,2.0\ncase_b,0.35,9.0\ncase (c),0.70,4.0\n"
PAPER = "pipeline: ad-lite\nseed: 1\npaper:\n  card: ad-lite\n  table: Table 1\n  expect:\n    accuracy: 0.9\n"


@pytest.fixture
def two_runs(make_run, runs, data):
    a = sealed(make_run, runs, data, run_id="aa" * 32, metrics={"accuracy": 0.7, "dice": 0.6, "n_cases": 3},
               manifest_text=PAPER, files={"logs/metrics.csv": CURVES, "per_case.csv": CASES,
                                           "figures/overlays/case__c_.png": "png", "figures/curves.png": "png"})
    b = sealed(make_run, runs, data, run_id="bb" * 32, metrics={"accuracy": 0.8, "dice": 0.5},
               manifest_text=PAPER.replace("seed: 1", "seed: 2"), started="2026-01-02T00:00:00+0000",
               files={"per_case.csv": CASES.replace("0.91", "0.95").replace("0.35", "0.30")})
    return a, b


def test_headline_prefers_the_papers_metric_and_skips_counts():
    assert rdata.headline({"n_cases": 12, "loss": 0.3, "dice": 0.8}) == ("dice", 0.8)
    assert rdata.headline({"n_cases": 12, "dice": 0.8, "kl": 1.0}, ["kl"]) == ("kl", 1.0)
    assert rdata.headline({"n_cases": 12, "secs_per_epoch": 3.0, "psnr_gain": 2.0}) == ("psnr_gain", 2.0)
    assert rdata.lower_is_better("hd95") and rdata.lower_is_better("kl_average") and rdata.lower_is_better("abs_rel")
    assert not rdata.lower_is_better("dice") and not rdata.lower_is_better("auroc")


def test_paper_rows_put_the_papers_numbers_first_with_deltas():
    rows = rdata.paper_rows({"dice": 0.7, "dice_sd": 0.1, "hd95": 3.0, "dice_ci95": [0.6, 0.8]}, {"hd95": 2.0,
                                                                                                 "iou": 0.5})
    assert [r["metric"] for r in rows] == ["hd95", "iou", "dice"]
    assert rows[0]["delta"] == pytest.approx(1.0) and rows[0]["lower_is_better"]
    assert rows[1]["run"] is None and rows[1]["delta"] is None
    assert rows[2]["sd"] == 0.1 and rows[2]["paper"] is None


def test_reproduction_picks_real_data_first_then_the_best_value(make_run, runs, data, tmp_path):
    text = PAPER.replace("accuracy: 0.9", "rmse: 1.0")
    sealed(make_run, runs, data, run_id="a1" * 32, metrics={"rmse": 0.5}, manifest_text=text)
    sealed(make_run, runs, data, run_id="a2" * 32, metrics={"rmse": 0.9}, manifest_text=text)
    rows = rdata.reproduction_rows(rdata.find_runs(runs))
    assert len(rows) == 1 and rows[0]["best"] == "a1" * 6  # smaller RMSE is better
    real = sealed(make_run, runs, data, run_id="a3" * 32, metrics={"rmse": 3.0}, manifest_text=text)
    info = json.loads((real / "run.json").read_text())
    info["fixture"] = False
    (real / "run.json").write_text(json.dumps(info))
    rows = rdata.reproduction_rows(rdata.find_runs(runs))
    assert rows[0]["best"] == "a3" * 6 and rows[0]["runs"] == 3
    assert rows[0]["metrics"][0] == {"metric": "rmse", "run": 3.0, "paper": 1.0, "sd": None, "delta": 2.0,
                                     "lower_is_better": True}


def test_curves_come_from_the_runs_own_log(tmp_path):
    add_files(tmp_path, {"logs/metrics.csv": CURVES})
    series = {s["name"]: s for s in rdata.curves(tmp_path)}
    assert series["train_loss"]["x"] == [0.0, 1.0] and series["train_loss"]["y"] == [0.9, 0.5]
    assert series["val_dice"]["y"] == [0.40, 0.62]
    assert rdata.curves(tmp_path / "nothing") == []


def test_per_case_worst_first_with_overlays(tmp_path):
    add_files(tmp_path, {"per_case.csv": CASES, "figures/overlays/case__c_.png": "png"})
    t = rdata.per_case(tmp_path)
    assert t["sort"] == "dice" and [r["cells"][0] for r in t["rows"]] == ["case_b", "case (c)", "case_a"]
    assert t["rows"][1]["overlay"] == "figures/overlays/case__c_.png" and t["rows"][0]["overlay"] is None
    add_files(tmp_path, {"per_case.csv": "case,rmse\nx,1.0\ny,5.0\n"})
    assert [r["cells"][0] for r in rdata.per_case(tmp_path)["rows"]] == ["y", "x"]  # the largest error first


def test_summaries_and_strip_points():
    metrics = {"dice": 0.7, "dice_sd": 0.1, "dice_ci95": [0.5, 0.9], "dice_n": 3, "n_cases": 9, "n_cases_sd": 0.0,
               "n_cases_ci95": [9, 9]}
    assert rdata.summaries(metrics) == [{"metric": "dice", "mean": 0.7, "sd": 0.1, "lo": 0.5, "hi": 0.9, "n": 3}]
    kids = [{"name": "fold1", "metrics": {"dice": 0.6}}, {"name": "fold2", "metrics": {"dice": 0.8}},
            {"name": "fold3", "metrics": {}}]
    assert rdata.strip_points(kids, ["dice"]) == [{"metric": "dice", "names": ["fold1", "fold2"],
                                                   "values": [0.6, 0.8]}]


def test_manifest_diff_marks_what_differs_from_the_default():
    d = rdata.manifest_diff({"train": {"epochs": 3, "lr": 0.1}, "seed": 0}, {"train": {"epochs": 50, "lr": 0.1},
                                                                            "seed": 0, "extra": 1})
    marked = {r["key"]: r["differs"] for r in d["rows"]}
    assert marked == {"train.epochs": True, "train.lr": False, "seed": False, "extra": True}
    assert not any(r["differs"] for r in rdata.manifest_diff({"a": 1}, None)["rows"])


def test_compare_data_joins_cases_and_gives_deltas(two_runs, runs):
    a, b = (rdata.Run(p, runs) for p in two_runs)
    c = rdata.compare_data([a, b])
    acc = next(m for m in c["metrics"] if m["metric"] == "accuracy")
    assert acc["values"] == [0.7, 0.8] and acc["deltas"] == [pytest.approx(0.1)]
    assert c["manifest"][0]["diff"] == [{"key": "seed", "a": 1, "b": 2}]
    sc = c["scatter"]["dice"]
    pairs = dict(zip(sc["cases"], zip(sc["a"], sc["b"], strict=True), strict=True))
    assert pairs == {"case_a": (0.91, 0.95), "case_b": (0.35, 0.30), "case (c)": (0.70, 0.70)}


def test_run_page_data_and_runs_show_say_the_same(two_runs, runs, cli):
    run = rdata.Run(two_runs[0], runs)
    s = rdata.run_summary(run)
    assert s["reproduce"] == "medrun rerun " + "aa" * 6 and s["status"] == "complete"
    assert s["metrics_vs_paper"][0] == {"metric": "accuracy", "run": 0.7, "paper": 0.9, "sd": None,
                                        "delta": pytest.approx(-0.2), "lower_is_better": False}
    r = cli("runs", "show", "aaaa", "--runs-dir", runs, "--json")
    assert r.code == 0 and r.json()["summary"]["metrics_vs_paper"] == json.loads(json.dumps(s["metrics_vs_paper"]))
    text = cli("runs", "show", "aaaa", "--runs-dir", runs).out
    assert "medrun rerun aaaaaaaaaaaa" in text and "accuracy" in text and "0.9000" in text and "-0.2000" in text


def test_verify_state_at_report_time(two_runs, runs):
    v = rdata.Verifier()
    try:
        a = rdata.Run(two_runs[0], runs)
        assert v(a)["state"] == "ok"
        (two_runs[0] / "metrics.json").write_text('{"accuracy": 0.99}')  # an edit after sealing
        bad = v(rdata.Run(two_runs[0], runs))
        assert bad["state"] == "fail" and "metrics.json" in bad["problems"][0]
    finally:
        v.close()


def test_report_rewrites_only_pages_whose_runs_changed(two_runs, runs, tmp_path):
    out = tmp_path / "report"
    first = build(runs, out, verify=False)  # verification states are checked above; code edits elsewhere change them
    pages = {"index.html", f"runs/ad-lite/train-{'aa' * 6}.html", f"runs/ad-lite/train-{'bb' * 6}.html"}
    assert set(first["written"]) == pages
    assert (out / "assets" / "plotly.min.js").stat().st_size > 1_000_000  # bundled: no CDN
    again = build(runs, out, verify=False)
    assert set(again["written"]) <= {"index.html"} and again["unchanged"] >= 2  # the index shows ages
    (two_runs[1] / "metrics.json").write_text('{"accuracy": 0.85}')
    third = build(runs, out, verify=False)
    assert set(third["written"]) == {"index.html", f"runs/ad-lite/train-{'bb' * 6}.html"}


def test_report_drops_pages_of_runs_that_are_gone_and_nothing_else(two_runs, runs, tmp_path):
    import shutil

    out = tmp_path / "report"
    build(runs, out)
    (out / "runs" / "notes.txt").write_text("mine")  # a file the user put there
    shutil.rmtree(two_runs[1])
    res = build(runs, out)
    assert res["removed"] == [f"runs/ad-lite/train-{'bb' * 6}.html"]
    assert (out / "runs" / "notes.txt").read_text() == "mine"
    assert (out / f"runs/ad-lite/train-{'aa' * 6}.html").is_file()


def test_cli_report_with_a_compare_page_and_default_manifest_marks(make_run, runs, data, cli, tmp_path):
    from medrun.manifests import manifest_path
    from medrun.pipelines.runner import default_manifest

    info = {"pipeline": "ad-lite", "dataset": "oasis", "fixture": True}
    default = default_manifest(info, {"dataset": {"root": "/x"}})
    changed = json.loads(json.dumps(default))
    changed["train"]["epochs"] = default["train"]["epochs"] + 1
    assert manifest_path("ad-lite", "oasis", fixture=True).is_file()
    a = sealed(make_run, runs, data, run_id="cc" * 32, manifest_text=yaml.safe_dump(default))
    b = sealed(make_run, runs, data, run_id="dd" * 32, manifest_text=yaml.safe_dump(changed))
    r = cli("report", "--compare", "cccc", "dddd", "--runs-dir", runs, "--json")
    assert r.code == 0, r.err
    res = r.json()
    assert res["compare"] == [f"compare/{'cc' * 6}-vs-{'dd' * 6}.html"] and res["runs"] == 2
    out = Path(res["out"])
    assert out == runs / "report" and (out / res["compare"][0]).is_file()
    marked = rdata.manifest_diff(rdata.Run(b, runs).manifest, default_manifest(info, rdata.Run(b, runs).manifest))
    assert [x["key"] for x in marked["rows"] if x["differs"]] == ["train.epochs"]
    assert not [x for x in rdata.manifest_diff(rdata.Run(a, runs).manifest, default)["rows"] if x["differs"]
                and x["key"] != "dataset.root"]
    # the index lists the compare page on the next report too
    again = cli("report", "--runs-dir", runs, "--json").json()
    assert again["compare"] == [] and (out / res["compare"][0]).is_file()
    assert res["compare"][0] in (out / "index.html").read_text()


@pytest.mark.parametrize("case", ["not-ours", "runs-root", "run-dir", "file"])
def test_report_refuses_folders_it_did_not_write(two_runs, runs, tmp_path, cli, case):
    target = {"not-ours": tmp_path / "mine", "runs-root": runs, "run-dir": two_runs[0],
              "file": tmp_path / "file.txt"}[case]
    if case == "not-ours":
        target.mkdir()
        (target / "thesis.tex").write_text("precious")
    if case == "file":
        target.write_text("precious")
    before = sorted(os.walk(target)) if target.is_dir() else target.read_text()
    r = cli("report", "--runs-dir", runs, "--out", target)
    assert r.code == 2 and "Traceback" not in r.err and len(r.err.strip().splitlines()) <= 2
    assert str(target) in r.err
    assert (sorted(os.walk(target)) if target.is_dir() else target.read_text()) == before
    assert not (target / STATE).exists() if target.is_dir() else True


def test_report_argument_errors(runs, tmp_path, cli, two_runs):
    r = cli("report", "--compare", "aaaa", "--runs-dir", runs)
    assert r.code == 2 and "two or more" in r.err
    r = cli("report", "--runs-dir", tmp_path / "none")
    assert r.code == 2 and "does not exist" in r.err


def _browser():
    """(playwright, chromium path), or skip; ``MEDRUN_REQUIRE_BROWSER=1`` (set by .ci/run) makes a missing browser a
    failure instead."""
    import shutil

    path = os.environ.get("MEDRUN_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        import playwright.sync_api as pw
    except ImportError:
        pw = None
    if pw is None or path is None:
        why = f"headless Chromium test needs {'playwright' if pw is None else 'chromium'} (apt-get install chromium)"
        if os.environ.get("MEDRUN_REQUIRE_BROWSER") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return pw, path


def _png(path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path)


@pytest.mark.slow
def test_pages_in_a_real_browser(make_run, runs, data, tmp_path):
    """Index, run page and compare page from file:// in headless Chromium: no console errors, the tables hold the
    runs' values, sorting and filtering work, plots are drawn. Screenshots go to the test's folder."""
    pw, chromium = _browser()
    a = sealed(make_run, runs, data, run_id="aa" * 32, metrics={"accuracy": 0.7, "dice": 0.6}, manifest_text=PAPER,
               files={"logs/metrics.csv": CURVES, "per_case.csv": CASES})
    _png(a / "figures" / "overlays" / "case__c_.png")
    from medrun.artifacts import RunDir

    RunDir(a).seal()
    sealed(make_run, runs, data, run_id="bb" * 32, metrics={"accuracy": 0.8, "dice": 0.5}, manifest_text=PAPER,
           files={"logs/metrics.csv": CURVES, "per_case.csv": CASES.replace("0.91", "0.95")})
    out = tmp_path / "report"
    res = build(runs, out, compare=[a, runs / "ad-lite" / f"train-{'bb' * 6}"])
    shots = tmp_path / "screenshots"
    shots.mkdir()
    errors: list[str] = []
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))

        page.goto((out / "index.html").as_uri())
        values = page.locator("#runs-table tbody tr td:nth-child(8)")
        assert sorted(values.all_inner_texts()) == ["0.7000", "0.8000"]
        page.locator("#runs-table thead th", has_text="value").click()
        assert values.all_inner_texts() == ["0.7000", "0.8000"]
        page.locator("#runs-table thead th", has_text="value").click()
        assert values.all_inner_texts() == ["0.8000", "0.7000"]
        page.fill("input[data-filter=runs-table]", "bbbbbbbb")
        assert page.locator("#runs-table tbody tr:visible").count() == 1
        assert page.locator("#repro tbody tr").count() == 1  # one pipeline × table, paper 0.9 beside the best run
        assert "0.9000" in page.locator("#repro tbody tr").inner_text()
        page.screenshot(path=str(shots / "index.png"), full_page=True)

        page.goto((out / f"runs/ad-lite/train-{'aa' * 6}.html").as_uri())
        row = page.locator("#metrics tbody tr", has_text="accuracy").inner_text()
        assert "0.7000" in row and "0.9000" in row and "-0.2000" in row
        assert page.locator("#cases-table tbody tr").first.inner_text().startswith("case_b")  # worst first
        assert page.locator("#cases-table a", has_text="overlay").count() == 1
        page.wait_for_selector("#curve-1 .main-svg")  # plotly drew the learning curves
        assert page.locator(".plot .main-svg").count() >= 2
        page.screenshot(path=str(shots / "run.png"), full_page=True)

        page.goto((out / res["compare"][0]).as_uri())
        row = page.locator("#compare-metrics tbody tr", has_text="accuracy").inner_text()
        assert "0.7000" in row and "0.8000" in row and "+0.1000" in row
        page.wait_for_selector("#scatter .main-svg")
        page.select_option("#scatter-metric", "hd95")
        assert "hd95" in page.locator("#scatter .gtitle").text_content()
        page.screenshot(path=str(shots / "compare.png"), full_page=True)
        browser.close()
    assert errors == []
    assert all((shots / f"{n}.png").stat().st_size > 1000 for n in ("index", "run", "compare"))
