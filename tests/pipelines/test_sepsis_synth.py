"""sepsis-synth: the generators against their definitions and at the paper's size, TabDDPM's denoiser at full
size, learning on the fixture (KDE-KNN rows → SVM-rbf beats chance on the internal test split and the external
cohort), the stages on finished runs, and the issue's bad inputs."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from medrun.pipelines.sepsis_synth import generators as gen


def _two_classes(n=300, d=6, share=0.2, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < share).astype(np.int64)
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.5 + y[:, None] * 1.5
    return x, y


# -- generators ---------------------------------------------------------------------------------------------------
def test_kdeknn_at_the_papers_size():
    """The paper's configuration: ~1084 training rows (18.55 % sepsis), 27 features → exactly 540 + 540 rows, each
    given its KDE's class by the k = 5 nearest-neighbour classifier fitted on the real rows."""
    from sklearn.neighbors import KNeighborsClassifier

    x, y = _two_classes(1084, 27, 0.1855)
    xs, ys, st = gen.sample_kdeknn(x, y, 540, np.random.default_rng(0))
    assert xs.shape == (1080, 27) and (ys == 0).sum() == 540 and (ys == 1).sum() == 540
    np.testing.assert_array_equal(KNeighborsClassifier(5).fit(x, y).predict(xs), ys)
    assert 0 < st["acceptance_1"] < 1 and st["drawn_1"] >= 540
    plain, _, _ = gen.sample_kde(x, y, 540, np.random.default_rng(0))
    assert (KNeighborsClassifier(5).fit(x, y).predict(plain) != ys).any()  # without the filter some disagree


def test_kde_is_scipys_full_covariance_scott_kde():
    """Samples of a Gaussian KDE have covariance Σ_data(ddof 0) + h²·Σ_data(ddof 1), h = Scott's n^(−1/(d+4))."""
    x, _ = _two_classes(400, 4, 0.0)
    kde = gen.kde(x)
    assert kde.factor == pytest.approx(len(x) ** (-1 / 8))
    draws = kde.resample(200_000, seed=np.random.default_rng(1)).T
    expected = np.cov(x.T, ddof=0) + kde.factor ** 2 * np.cov(x.T, ddof=1)
    np.testing.assert_allclose(np.cov(draws.T), expected, atol=0.03 * np.abs(expected).max())


def test_smote_rows_lie_between_same_class_neighbours():
    """Each SMOTE row is x + u·(x_nn − x), u ∈ [0, 1], x_nn among the 5 nearest same-class rows of x (the card's
    definition), checked by brute force; only new rows are returned, n per class."""
    x, y = _two_classes(60, 3, 0.3, seed=2)
    xs, ys, _ = gen.sample_smote(x, y, 25, seed=0)
    assert xs.shape == (50, 3) and (ys == 1).sum() == 25
    for row, c in zip(xs, ys, strict=True):
        own = x[y == c]
        ok = False
        for xi in own:
            nn = np.argsort(np.linalg.norm(own - xi, axis=1))[1:6]
            for j in nn:
                seg = own[j] - xi
                u = float(np.dot(row - xi, seg) / np.dot(seg, seg))
                if -1e-9 <= u <= 1 + 1e-9 and np.allclose(xi + u * seg, row, atol=1e-8):
                    ok = True
                    break
            if ok:
                break
        assert ok, row
    assert (np.linalg.norm(xs[:, None] - x[None], axis=-1).min(1) > 1e-9).all()  # no plain copies


def test_tabddpm_denoiser_at_full_size():
    """The card's TabDDPM: MLP 4×256 over a 128-wide timestep + class embedding, 27 features; one forward pass and
    one reverse step of the diffusers scheduler (T = 1000, cosine betas)."""
    from medrun.models import create

    net = create("tabddpm-mlp", d_in=27)
    d, t = 27, 128
    expected = (d * t + t) + 2 * (t * t + t) + 2 * t + (t * 256 + 256) + 3 * (256 * 256 + 256) + (256 * d + d)
    assert sum(p.numel() for p in net.parameters()) == expected == 274_203
    x, steps, y = torch.randn(8, d), torch.randint(0, 1000, (8,)), torch.randint(0, 2, (8,))
    out = net(x, steps, y)
    assert out.shape == (8, 27) and torch.isfinite(out).all()
    sched = gen.scheduler(1000)
    sched.set_timesteps(1000)
    assert len(sched.timesteps) == 1000 and sched.config.beta_schedule == "squaredcos_cap_v2"
    prev = sched.step(out, sched.timesteps[0], x).prev_sample
    assert prev.shape == (8, 27) and torch.isfinite(prev).all()


# -- through the CLI ----------------------------------------------------------------------------------------------
def _complete(runs: Path) -> list[Path]:
    return [p.parent for p in runs.glob("sepsis-synth/*/MANIFEST.sha256")]


@pytest.mark.slow
def test_learns_kdeknn_rows_detect_sepsis(cli, runs):
    """The card's claim at fixture size: classifiers trained only on 100 + 100 KDE-KNN rows detect sepsis on the
    internal test split and the shifted external cohort (SVM-rbf AUC ≥ 0.75; chance 0.5); eval finds the train run."""
    args = ("sepsis-synth", "--dataset", "sepsis-csv", "--fixture", "--runs-dir", runs,
            "-o", "train.rf.n_estimators=20")
    r = cli("train", *args, "--json")
    assert r.code == 0, r.err
    out = r.json()
    m = out["metrics"]
    assert m["auc_test_svm_rbf"] >= 0.75 and m["auc_external_svm_rbf"] >= 0.75, m
    assert m["auc_test_rf"] >= 0.7 and m["rows_train"] == 200 and m["sepsis_share_train"] == 0.5
    run = runs / "sepsis-synth" / f"train-{out['run_id'][:12]}"
    for f in ("checkpoints/model.skops", "per_case.csv", "figures/roc.png", "paper.md", "MANIFEST.sha256"):
        assert (run / f).exists(), f
    assert "Table 4" in (run / "paper.md").read_text() and "not comparable" in (run / "paper.md").read_text()
    gen_runs = list(runs.glob("sepsis-synth/generate-*"))
    assert len(gen_runs) == 1 and json.loads((gen_runs[0] / "metrics.json").read_text())["rows_min"] == 100
    for f in ("synthetic.npz", "synthetic/set2.csv", "figures/marginals.png", "figures/fig2_distributions.png"):
        assert (gen_runs[0] / f).exists(), f
    assert json.loads((run / "run.json").read_text())["children"][0]["stage"] == "generate"

    ev = cli("eval", *args, "--split", "external", "--json")
    assert ev.code == 0, ev.err
    assert ev.json()["metrics"]["auc_external_svm_rbf"] == m["auc_external_svm_rbf"]


@pytest.mark.slow
def test_eval_and_predict_from_a_checkpoint(cli, runs, tmp_path):
    """A train run on the real split (no generator); eval from its model file; predict on unlabelled patients; a
    file that is not a skops model is refused with exit 2."""
    args = ("sepsis-synth", "--dataset", "sepsis-csv", "--fixture", "--runs-dir", runs,
            "-o", "train.source=real", "-o", "train.classifiers=[rf,svm_rbf]", "-o", "train.rf.n_estimators=10")
    r = cli("train", *args, "--json")
    assert r.code == 0, r.err
    m = r.json()["metrics"]
    assert m["rows_real"] == m["rows_train"] == 340 and not list(runs.glob("sepsis-synth/generate-*"))
    run = runs / "sepsis-synth" / f"train-{r.json()['run_id'][:12]}"
    ck = cli("eval", *args, "--checkpoint", run / "checkpoints" / "model.skops", "--json")
    assert ck.code == 0 and ck.json()["metrics"]["auc_test_svm_rbf"] == m["auc_test_svm_rbf"]

    new = tmp_path / "new.csv"
    lines = (Path(json.loads((run / "data.lock.json").read_text())["trees"]["data"]["root"]) / "external.csv"
             ).read_text().splitlines()
    new.write_text("\n".join(line.rsplit(",", 1)[0] for line in lines[:11]) + "\n")  # 10 patients, no label column
    pr = cli("predict", *args, "-o", f"predict.input={new}", "--json")
    assert pr.code == 0, pr.err
    assert pr.json()["metrics"]["n"] == 10
    rows = (runs / "sepsis-synth" / f"predict-{pr.json()['run_id'][:12]}" / "per_case.csv").read_text().splitlines()
    assert rows[0].startswith("patient,score_rf,sepsis_rf") and rows[1].startswith("SL0001,")

    bad = tmp_path / "bad.skops"
    bad.write_bytes(b"not a model")
    r = cli("eval", *args, "--checkpoint", bad)
    assert r.code == 2 and "bad.skops is not a skops model file" in r.err and "Traceback" not in r.err


@pytest.mark.slow
def test_tabddpm_smote_privacy_and_mix(cli, runs):
    """TabDDPM trains through Lightning and samples exactly n per class; DCR(SMOTE) < DCR(KDE-KNN) (the card's smoke
    check) with the Fig. 4 histogram; a two-ratio mix summarises its train runs."""
    args = ("sepsis-synth", "--dataset", "sepsis-csv", "--fixture", "--runs-dir", runs,
            "-o", "generate.n_per_class=50", "-o", "generate.sets=2", "-o", "generate.tabddpm.steps=60",
            "-o", "generate.tabddpm.timesteps=100", "-o", "generate.tabddpm.layers=[64,64]")
    r = cli("generate", *args, "-o", "generate.method=tabddpm", "--json")
    assert r.code == 0, r.err
    m = r.json()["metrics"]
    assert m["rows_min"] == m["rows_max"] == 50 and m["fit_seconds"] > 0 and np.isfinite(m["dcr"])
    g = runs / "sepsis-synth" / f"generate-{r.json()['run_id'][:12]}"
    assert (g / "checkpoints" / "model.safetensors").exists() and (g / "figures" / "learning_curves.png").exists()

    p = cli("privacy", *args, "-o", "privacy.methods=[smote,kdeknn]", "--json")
    assert p.code == 0, p.err
    pm = p.json()["metrics"]
    assert pm["dcr_smote"] < pm["dcr_kdeknn"] and pm["dcr_kdeknn_minus_smote"] > 0 and pm["dcr_rr"] > 0
    prun = runs / "sepsis-synth" / f"privacy-{p.json()['run_id'][:12]}"
    assert (prun / "figures" / "fig4_dcr.png").exists() and len((prun / "per_case.csv").read_text().splitlines()) == 401

    mx = cli("mix", *args, "-o", "mix.ratios=[100,0]", "-o", "mix.repeats=2", "-o", "train.rf.n_estimators=10",
             "--json")
    assert mx.code == 0, mx.err
    mm = mx.json()["metrics"]
    assert mm["total"] == 100 and 0.5 < mm["auc_test_r0"] <= 1 and "auc_external_r100_sd" in mm
    mrun = runs / "sepsis-synth" / f"mix-{mx.json()['run_id'][:12]}"
    assert len(json.loads((mrun / "run.json").read_text())["children"]) == 4
    assert "Table 5" in (mrun / "paper.md").read_text()


@pytest.mark.slow
def test_prepare_flattens_timelines_into_the_csv_layout(cli, runs):
    """prepare on the fixture's hospital timelines (through feature_map.yaml) writes internal.csv/external.csv in the
    sepsis-csv layout, which the pipeline reads back as a dataset of its own."""
    args = ("sepsis-synth", "--dataset", "sepsis-csv", "--fixture", "--runs-dir", runs)
    r = cli("prepare", *args, "-o", "dataset.internal=timelines", "-o", "dataset.feature_map=feature_map.yaml",
            "--json")
    assert r.code == 0, r.err
    m = r.json()["metrics"]
    assert m["features"] == 27 and m["n_internal"] + m["dropped_early_internal"] == 20 and m["n_external"] == 300
    run = runs / "sepsis-synth" / f"prepare-{r.json()['run_id'][:12]}"
    head = (run / "internal.csv").read_text().splitlines()[0].split(",")
    assert head[0] == "patient_id" and head[-1] == "sepsis" and len(head) == 29
    from medrun.datasets import sepsis

    t = sepsis.read(run / "internal.csv", sepsis.effective_map("sepsis-csv"), None)
    assert t.x.shape == (m["n_internal"], 27)


@pytest.mark.slow
def test_tune_finds_parameters_by_cross_validation(cli, runs):
    r = cli("tune", "sepsis-synth", "--dataset", "sepsis-csv", "--fixture", "--runs-dir", runs,
            "-o", "train.source=real", "-o", "tune.trials=3", "-o", "tune.folds=3", "-o", "tune.classifiers=[svm_rbf]",
            "--json")
    assert r.code == 0, r.err
    assert 0.5 < r.json()["metrics"]["auc_cv_svm_rbf"] <= 1
    run = runs / "sepsis-synth" / f"tune-{r.json()['run_id'][:12]}"
    assert len((run / "trials.csv").read_text().splitlines()) == 4
    assert "-o train.svm_rbf.C=" in (run / "paper.md").read_text()


# -- bad input ------------------------------------------------------------------------------------------------------
@pytest.fixture
def data(tmp_path):
    from medrun.datasets import get

    return get("sepsis-csv").make_fixture(tmp_path / "sepsis", 0)


def _edit(path: Path, fn) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join(fn(lines)) + "\n")


def _drop_column_12(lines):  # lactate
    return [",".join(c for i, c in enumerate(line.split(",")) if i != 12) for line in lines]


def _fails(cli, runs, data, code, *needles, extra=()):
    r = cli("train", "sepsis-synth", "--dataset", "sepsis-csv", "--data-dir", data, "--runs-dir", runs, *extra)
    assert r.code == code, (r.code, r.err)
    assert "Traceback" not in r.err
    for n in needles:
        assert n in r.err, (n, r.err)
    assert not _complete(runs)
    return r


def test_csv_missing_a_column(cli, runs, data):
    _edit(data / "internal.csv", _drop_column_12)
    _fails(cli, runs, data, 3, "internal.csv", "no column for feature 'lactate'", "dataset.feature_map")
    assert not runs.exists()  # refused before a run directory opened


def test_csv_missing_a_mapped_column(cli, runs, data):
    (data / "map.yaml").write_text("Lact: lactate\n")
    _edit(data / "external.csv", _drop_column_12)
    _fails(cli, runs, data, 3, "external.csv", "no column for feature 'lactate' (nor 'Lact', which",
           "map.yaml", extra=("-o", "dataset.feature_map=map.yaml"))


def test_label_outside_0_1(cli, runs, data):
    _edit(data / "internal.csv", lambda ls: [ls[0], ls[1].rsplit(",", 1)[0] + ",2", *ls[2:]])
    _fails(cli, runs, data, 3, "internal.csv", "label column 'sepsis' holds '2' on line 2", "labels must be 0 or 1")


def test_all_rows_one_class(cli, runs, data):
    _edit(data / "external.csv", lambda ls: [ls[0], *(line.rsplit(",", 1)[0] + ",1" for line in ls[1:])])
    _fails(cli, runs, data, 3, "external.csv", "all 300 patients have sepsis = 1", "both classes")


def test_timeline_with_a_bad_label_fails_the_run_without_completing(cli, runs, data):
    f = sorted((data / "timelines").iterdir())[4]
    _edit(f, lambda ls: [*ls[:-1], ls[-1].rsplit("|", 1)[0] + "|7"])
    _fails(cli, runs, data, 3, f.name, "labels must be 0 or 1",
           extra=("-o", "dataset.internal=timelines", "-o", "dataset.feature_map=feature_map.yaml"))


def test_missing_data_and_manifest_errors(cli, runs, tmp_path, data):
    r = cli("train", "sepsis-synth", "--dataset", "physionet2019", "--data-dir", tmp_path / "nowhere",
            "--runs-dir", runs)
    assert r.code == 3 and "nowhere" in r.err and "PhysioNet" in r.err and "--fixture" in r.err
    shutil.rmtree(data / "timelines")
    _fails(cli, runs, data, 2, "train.set 3 is not one of the 3 synthetic sets", extra=("-o", "train.set=3"))
    _fails(cli, runs, data, 2, "train.source", extra=("-o", "train.source=gan"))
    _fails(cli, runs, data, 3, "nope.csv", "internal data not found", extra=("-o", "dataset.internal=nope.csv"))


def test_mix_needs_a_synthetic_set_per_repeat(cli, runs, data):
    r = cli("mix", "sepsis-synth", "--dataset", "sepsis-csv", "--data-dir", data, "--runs-dir", runs,
            "-o", "generate.sets=2")
    assert r.code == 2 and "mix.repeats 3 needs as many synthetic sets" in r.err and "Traceback" not in r.err
    assert not _complete(runs)
