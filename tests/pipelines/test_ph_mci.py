"""ph-mci: the topology against references, the content-addressed cache (resume, nothing recomputed), learning on
the fixture, stages on a finished run, and bad input through the CLI."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from medrun.pipelines.ph_mci import topo


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """The topology cache lives in $MEDRUN_CACHE/ph-mci: one per test, so that counts of computed subjects do not
    depend on which tests ran before."""
    monkeypatch.setenv("MEDRUN_CACHE", str(tmp_path / "cache"))


def _cache() -> Path:
    return Path(os.environ["MEDRUN_CACHE"]) / "ph-mci"

# -- the method against references -----------------------------------------------------------------------------------


def test_embedding_point_count():
    x = np.arange(1.0, 11.0)  # T = 10
    assert topo.embed(x, 3, drop_last=False).shape == (8, 3)  # the paper's T − 2 windows
    pts = topo.embed(x, 3, drop_last=True)
    assert pts.shape == (7, 3)  # the authors' code: T − 3
    assert pts[0].tolist() == [1, 2, 3] and pts[-1].tolist() == [7, 8, 9]


def test_h0_has_points_minus_one_finite_bars():
    pts = np.random.default_rng(0).normal(size=(40, 3))
    dg = topo.rips_diagrams(pts, 2)
    assert len(dg) == 3 and len(dg[0]) == 39
    assert np.all(dg[0][:, 0] == 0) and np.all(np.isfinite(dg[0]))
    assert len(topo.rips_diagrams(pts, 0)) == 1


def _brute_w1(a, b):
    """Exact 1-Wasserstein with L∞ ground metric by an assignment on the diagonal-augmented cost matrix."""
    from scipy.optimize import linear_sum_assignment

    n, m = len(a), len(b)
    c = np.zeros((n + m, n + m))
    c[:n, :m] = np.abs(a[:, None, :] - b[None, :, :]).max(-1)
    c[:n, m:] = ((a[:, 1] - a[:, 0]) / 2)[:, None]
    c[n:, :m] = ((b[:, 1] - b[:, 0]) / 2)[None, :]
    r, k = linear_sum_assignment(c)
    return c[r, k].sum()


def _diagram(rng, n):
    b = rng.uniform(0, 1, n)
    return np.stack([b, b + rng.uniform(0.01, 1, n)], 1)


def test_w1_identity_symmetry_and_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(20):
        a, b = _diagram(rng, rng.integers(0, 7)), _diagram(rng, rng.integers(1, 7))
        assert topo.wasserstein(a, a) == pytest.approx(0, abs=1e-12)
        assert topo.wasserstein(a, b) == pytest.approx(topo.wasserstein(b, a), abs=1e-12)
        assert topo.wasserstein(a, b) == pytest.approx(_brute_w1(a, b), abs=1e-9)
    d = topo.distance_matrix([_diagram(rng, 4) for _ in range(5)])
    assert np.allclose(d, d.T) and np.all(np.diag(d) == 0) and np.all(d[np.triu_indices(5, 1)] > 0)


def test_infinite_bars_are_dropped():
    a = np.array([[0.0, 1.0], [0.0, np.inf]])
    assert topo.finite(a).tolist() == [[0.0, 1.0]]


def test_gudhi_agrees_with_ripser():
    ripser = pytest.importorskip("ripser")
    rng = np.random.default_rng(2)
    for trial in range(3):
        x = np.sin(np.arange(40) * 0.4 + trial) * (1 + trial) + rng.normal(0, 0.1, 40)
        pts = topo.embed(x, 3, True)
        ours = topo.rips_diagrams(pts, 2)
        theirs = ripser.ripser(pts, maxdim=2)["dgms"]
        for k in range(3):
            t = topo.finite(theirs[k])
            t = t[t[:, 1] > t[:, 0]]
            o = ours[k][ours[k][:, 1] > ours[k][:, 0]]
            assert len(o) == len(t), (trial, k)
            assert np.allclose(np.sort(o, axis=0), np.sort(t, axis=0), atol=1e-5), (trial, k)


def test_cache_roundtrip_and_key(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 25)) + 3
    t = topo.subject_topology(x, topo.Settings())
    assert t.pr.shape == (3, 4, 4) and np.allclose(t.pr, t.pr.transpose(0, 2, 1))
    p = tmp_path / "c" / "k.npz"
    topo.save(p, t)
    back = topo.load(p)
    assert np.array_equal(back.pr, t.pr)
    assert all(np.array_equal(a, b) for k in range(3) for a, b in zip(back.diagrams[k], t.diagrams[k], strict=True))
    assert [f.name for f in p.parent.iterdir()] == ["k.npz"]  # no temp file left
    s = topo.Settings()
    assert topo.cache_key("a", "CB", s) != topo.cache_key("b", "CB", s) != topo.cache_key("a", "CO", s)
    assert topo.cache_key("a", "CB", s) != topo.cache_key("a", "CB", topo.Settings(drop_last=False))


# -- the pipeline through the CLI ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    from medrun.datasets import adni_rsfmri

    return adni_rsfmri.fixture(tmp_path_factory.mktemp("ph-small"), 0, n_per_class=4, length=30)


def _topo(cli, root, runs, *extra):
    return cli("topo", "ph-mci", "--dataset", "adni-rsfmri", "--data-dir", root, "--runs-dir", runs, "--json",
               "-o", "dataset.networks=[CB]", *extra)


def test_topo_resumes_after_interrupt_and_a_second_run_computes_nothing(cli, runs, small, monkeypatch):
    monkeypatch.setenv("MEDRUN_TEST_PH_STOP_AFTER", "3")
    r = _topo(cli, small, runs, "-o", "ph.workers=1")
    assert r.code == 130 and "Traceback" not in r.err
    (run,) = (runs / "ph-mci").glob("topo-*")
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    assert not (run / "MANIFEST.sha256").exists()
    cache = _cache()
    assert len(list(cache.glob("*.npz"))) == 3 and not list(cache.glob(".*"))  # whole files only
    monkeypatch.delenv("MEDRUN_TEST_PH_STOP_AFTER")

    r = _topo(cli, small, runs, "-o", "ph.workers=1")  # the same command resumes: only the 5 missing are computed
    assert r.code == 0, r.err
    m = r.json()["metrics"]
    assert (m["cached"], m["computed"], m["csvs"], m["subjects"]) == (3, 5, 8, 8)
    run = Path(r.json()["run_dir"])  # the same directory, unless the code changed in between (a shared checkout)
    assert (run / "features" / "CB" / "HC").is_dir() and len(list(run.glob("features/CB/*/*_h*.csv"))) == 24
    assert (run / "figures" / "persistence_diagrams.png").stat().st_size > 0

    again = _topo(cli, small, runs, "-o", "ph.workers=1", "--force")  # same inputs: nothing computed
    assert again.code == 0 and again.json()["metrics"]["computed"] == 0 and again.json()["metrics"]["cached"] == 8
    two = _topo(cli, small, runs, "-o", "ph.workers=2")  # workers are not part of the cache key
    assert two.code == 0 and two.json()["metrics"]["computed"] == 0
    other = _topo(cli, small, runs, "-o", "ph.sw_drop_last=false")  # a setting that changes the result
    assert other.code == 0 and other.json()["metrics"]["computed"] == 8


def test_two_workers_give_the_same_features(tmp_path, small):
    from medrun.datasets import adni_rsfmri as ds

    series = ds.list_series(small, ["HC", "MCI"], ["CB"])[:4]
    items = [topo.Item(f"{s.cls}/{s.subject}", s.path, s.network) for s in series]
    one, st1 = topo.compute(items, topo.Settings(), tmp_path / "a", ds.read_series, 1, log=lambda *a: None)
    two, st2 = topo.compute(items, topo.Settings(), tmp_path / "b", ds.read_series, 2, log=lambda *a: None)
    assert st1["computed"] == st2["computed"] == 4
    for k in one:
        assert one[k].name == two[k].name
        assert np.array_equal(topo.load(one[k]).pr, topo.load(two[k]).pr)


def test_analyze_needs_topo_then_writes_p_plots(cli, runs, small):
    args = ("analyze", "ph-mci", "--dataset", "adni-rsfmri", "--data-dir", small, "--runs-dir", runs, "--json",
            "-o", "dataset.networks=[CB]", "-o", "analyze.comparisons=[[HC, MCI]]", "-o", "task.network=CB",
            "-o", "analyze.alpha=0.05")  # 4 vs 4 subjects: the smallest rank-sum p is about 0.02
    r = cli(*args)
    assert r.code == 2 and "medrun topo ph-mci" in r.err
    assert _topo(cli, small, runs, "-o", "task.network=CB", "-o", "analyze.alpha=0.05").code == 0
    r = cli(*args)
    assert r.code == 0, r.err
    m = r.json()["metrics"]
    assert m["computed"] == 0 and m["tests"] == 3 * 153 and m["significant"] > 0  # HC blocks vs flat MCI
    run = runs / "ph-mci" / f"analyze-{r.json()['run_id'][:12]}"
    for f in ("figures/pplot_HC-MCI_CB_h0.png", "analyze/pvalues_HC-MCI_CB_h0.csv", "significant_pairs.csv",
              "analyze/ps_CB_roi1_h0.csv", "figures/persistence_diagrams_CB_roi1.png", "paper.md"):
        assert (run / f).exists(), f
    ps = np.loadtxt(run / "analyze" / "ps_CB_roi1_h0.csv", delimiter=",", skiprows=1)
    assert ps.shape == (8, 8) and np.allclose(ps, ps.T)


@pytest.mark.slow
def test_learns_on_fixture_then_eval_predict_and_reuse(cli, runs):
    """The card's fixture (HC/MCI × 20, CB, T = 60), the full-size network: last-epoch test accuracy ≥ 0.75 (n = 8,
    chance 0.5) after 12 epochs (the smoke run trains 30 epochs × 3 seeds)."""
    from medrun.pipelines import get
    from medrun.pipelines.runner import stage_code

    base = ("ph-mci", "--dataset", "adni-rsfmri", "--fixture", "--runs-dir", runs, "--json")
    r = cli("train", *base, "-o", "train.epochs=12")
    assert r.code == 0, r.err
    m = r.json()["metrics"]
    assert m["accuracy"] >= 0.75 and m["accuracy_peak"] >= m["accuracy"] and m["n"] == 8, m
    assert m["params_total"] == 551_586  # CB (n = 18), paper head
    run = runs / "ph-mci" / f"train-{r.json()['run_id'][:12]}"
    for f in ("checkpoints/model.safetensors", "per_case.csv", "paper.md", "figures/confusion_matrix.png",
              "figures/learning_curves.png", "MANIFEST.sha256"):
        assert (run / f).exists(), f
    text = (run / "paper.md").read_text()
    assert "accuracy_peak" in text and "Table 1" in text and "0.8500" in text
    lock = json.loads((run / "data.lock.json").read_text())
    assert len(lock["splits"]["train"]) == 32 and len(lock["splits"]["test"]) == 8
    assert not set(lock["splits"]["train"]) & set(lock["splits"]["test"])

    ev = cli("eval", *base, "-o", "train.epochs=12")
    assert ev.code == 0, ev.err
    assert ev.json()["metrics"]["accuracy"] == m["accuracy"]
    pred = cli("predict", *base, "-o", "train.epochs=12")
    assert pred.code == 0 and pred.json()["metrics"]["n"] == 8
    again = cli("train", *base, "-o", "train.epochs=12", "--dry-run", "--json").json()
    code_now = stage_code(get("ph-mci"))["sha256"]
    if code_now == json.loads((run / "run.json").read_text())["code"]["sha256"]:  # others may edit a shared checkout
        assert again["would_reuse"] and again["run_id"] == r.json()["run_id"]


def test_bad_csv_names_file_and_subject_via_cli(cli, runs, small, tmp_path):
    import shutil

    root = tmp_path / "d"
    shutil.copytree(small, root)
    bad = sorted((root / "MCI" / "CB").glob("*.csv"))[1]
    x = np.loadtxt(bad, delimiter=",")
    x[3, 5] = np.nan
    np.savetxt(bad, x, delimiter=",")
    r = _topo(cli, root, runs)
    assert r.code == 3 and bad.name in r.err and bad.stem in r.err and "NaN" in r.err and "Traceback" not in r.err
    (run,) = (runs / "ph-mci").glob("topo-*")
    assert json.loads((run / "run.json").read_text())["status"] == "failed"
    assert not (run / "MANIFEST.sha256").exists() and not list(_cache().glob("*.npz"))

    x[3, 5] = 1.0
    x[6] = 2.0  # a constant ROI
    np.savetxt(bad, x, delimiter=",")
    r = cli("train", "ph-mci", "--dataset", "adni-rsfmri", "--data-dir", root, "--runs-dir", runs,
            "-o", "task.network=CB")
    assert r.code == 3 and bad.stem in r.err and "constant ROI row(s) 7" in r.err


def test_subject_in_two_classes_via_cli(cli, runs, small, tmp_path):
    import shutil

    root = tmp_path / "d"
    shutil.copytree(small, root)
    src = sorted((root / "HC" / "CB").glob("*.csv"))[0]
    shutil.copy(src, root / "MCI" / "CB" / src.name)
    r = cli("train", "ph-mci", "--dataset", "adni-rsfmri", "--data-dir", root, "--runs-dir", runs,
            "-o", "task.network=CB")
    assert r.code == 3 and f"subject {src.stem} is in two class folders, HC and MCI" in r.err


def test_manifest_errors(cli, runs, small):
    r = cli("train", "ph-mci", "--dataset", "adni-rsfmri", "--data-dir", small, "--runs-dir", runs,
            "-o", "task.classes=[HC, HC]")
    assert r.code == 2 and "two different classes" in r.err
    r = cli("train", "ph-mci", "--dataset", "adni-rsfmri", "--data-dir", small, "--runs-dir", runs,
            "-o", "ph.max_dim=1", "-o", "task.dim=2")
    assert r.code == 2 and "max_dim" in r.err
    r = cli("train", "ph-mci", "--dataset", "adni-rsfmri", "--data-dir", small / "HC", "--runs-dir", runs)
    assert r.code == 3 and "HC" in r.err


def test_every_manifest_validates():
    from medrun import manifests
    from medrun.pipelines import get

    spec = get("ph-mci")
    for fixture in (False, True):
        res = manifests.load_file(manifests.manifest_path("ph-mci", "adni-rsfmri", fixture=fixture))
        m = manifests.validate(res, spec.manifest_cls())
        assert m.task.classes == ["HC", "MCI"]


def test_grid_and_cv_are_train_runs_reused_and_evaluable(cli, runs, small):
    common = ("ph-mci", "--dataset", "adni-rsfmri", "--data-dir", small, "--runs-dir", runs, "--json",
              "-o", "task.network=CB", "-o", "train.epochs=2", "-o", "ph.workers=1", "-o", "train.folds=2")
    g = cli("grid", *common, "-o", "grid.networks=[CB]", "-o", "grid.comparisons=[[HC, MCI]]", "-o", "grid.dims=[0, 1]")
    assert g.code == 0, g.err
    assert g.json()["metrics"]["cells"] == 2
    run = Path(g.json()["run_dir"])
    text = (run / "paper.md").read_text()
    assert "| HC-MCI | CB | 0 |" in text and "0.8500" in text and "0.7500" in text  # Table 1's CB cells for H0, H1
    assert len((run / "per_cell.csv").read_text().splitlines()) == 3
    cells = json.loads((run / "run.json").read_text())["children"]
    assert [c["name"] for c in cells] == ["HC-MCI_CB_h0", "HC-MCI_CB_h1"]
    assert all(json.loads((Path(c["run_dir"]) / "run.json").read_text())["stage"] == "train" for c in cells)

    fold1 = cli("train", *common, "-o", "train.fold=0")  # trained beforehand: the cv's fold 1
    assert fold1.code == 0, fold1.err
    c = cli("cv", *common)
    assert c.code == 0, c.err
    assert "fold 1/2 fold1: reused" in c.err and "fold 2/2 fold2: running" in c.err
    m = c.json()["metrics"]
    assert m["folds"] == 2 and m["accuracy_n"] == 2 and "accuracy_sd" in m and len(m["accuracy_ci95"]) == 2
    cv_run = Path(c.json()["run_dir"])
    assert len((cv_run / "per_fold.csv").read_text().splitlines()) == 3
    folds = json.loads((cv_run / "run.json").read_text())["children"]
    assert folds[0]["run_dir"] == fold1.json()["run_dir"] and "mean ± sd" in (cv_run / "paper.md").read_text()
    ev = cli("eval", *common, "-o", "train.fold=1")  # a fold is an ordinary train run: eval finds it
    assert ev.code == 0, ev.err
    fold2 = json.loads((Path(folds[1]["run_dir"]) / "metrics.json").read_text())
    assert ev.json()["metrics"]["accuracy"] == fold2["accuracy"]
    again = cli("cv", *common)
    assert again.code == 0 and again.json()["reused"]


def test_subject_in_two_folds_via_cli(cli, runs, small, tmp_path):
    from medrun.datasets import adni_rsfmri as ds

    subjects = [s.subject for s in ds.list_series(small, ["HC", "MCI"], ["CB"])]
    folds = tmp_path / "folds.csv"
    folds.write_text("subject,fold\n" + "".join(f"{s},{i % 2 + 1}\n" for i, s in enumerate(subjects))
                     + f"{subjects[0]},2\n")
    r = cli("cv", "ph-mci", "--dataset", "adni-rsfmri", "--data-dir", small, "--runs-dir", runs,
            "-o", "task.network=CB",
            "-o", f"train.folds_file={folds}", "-o", "ph.workers=1")
    assert r.code == 3 and f"subject {subjects[0]} is in two folds, 1 and 2" in r.err and "Traceback" not in r.err
    folds.write_text("subject,fold\n" + "".join(f"{s},{i % 2 + 1}\n" for i, s in enumerate(subjects[1:])))
    r = cli("cv", "ph-mci", "--dataset", "adni-rsfmri", "--data-dir", small, "--runs-dir", runs,
            "-o", "task.network=CB",
            "-o", f"train.folds_file={folds}", "-o", "ph.workers=1")
    assert r.code == 3 and f"no fold for subject {subjects[0]}" in r.err


def test_baselines_random_forest_and_densenet(cli, runs, small):
    r = cli("baseline", "ph-mci", "--dataset", "adni-rsfmri", "--data-dir", small, "--runs-dir", runs, "--json",
            "-o", "task.network=CB", "-o", "ph.workers=1", "-o", "model.image_size=32", "-o", "train.epochs=1",
            "-o", "baseline.rf_trees=20")
    assert r.code == 0, r.err
    m = r.json()["metrics"]
    assert 0 <= m["rf_accuracy"] <= 1 and m["densenet121_params"] == 6_949_634  # MONAI DenseNet-121, 1 → 2 channels
    assert 0 <= m["proposed_accuracy"] <= 1 and m["proposed_params"] == 551_586  # the proposed network, trained too
    run = Path(r.json()["run_dir"])
    text = (run / "paper.md").read_text()
    assert "Table 2" in text and "| random forest (flattened PR) |" in text and "0.8200" in text  # CB, RF, ADNI
    nets = json.loads((run / "run.json").read_text())["children"]  # the two networks are train runs of their own
    assert [c["name"] for c in nets] == ["densenet121", "proposed"]
    dense = Path(nets[0]["run_dir"])
    assert (dense / "checkpoints" / "model.safetensors").exists()
    assert "arch: densenet121" in (dense / "manifest.yaml").read_text()


def test_fixture_pr_matrices_carry_the_cards_signal(small):
    """HC: amplitude 1 vs 3 halves give a 2×2 block pattern in the H0 PR matrix; MCI (all amplitude 2) is flat."""
    from medrun.datasets import adni_rsfmri as ds

    def blocks(cls):
        x = ds.read_series(next(small.glob(f"{cls}/CB/*.csv")), "CB")
        pr = topo.subject_topology(x, topo.Settings(max_dim=0)).pr[0]
        within = np.r_[pr[:9, :9][np.triu_indices(9, 1)], pr[9:, 9:][np.triu_indices(9, 1)]].mean()
        return within, pr[:9, 9:].mean()

    hc_within, hc_between = blocks("HC")
    mci_within, mci_between = blocks("MCI")
    assert hc_between > 3 * hc_within
    assert mci_between < 1.5 * mci_within


def test_stale_temp_files_of_killed_workers_are_removed(tmp_path):
    import os
    import time

    old, young = tmp_path / ".abc-1.tmp", tmp_path / ".abc-2.tmp"
    old.write_bytes(b"partial")
    young.write_bytes(b"partial")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    topo.compute([], topo.Settings(), tmp_path, read=None, log=lambda *a: None)
    assert not old.exists() and young.exists()
