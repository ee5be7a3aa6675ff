"""ad-progression: learning on the fixture (held-out mAUC well above chance), eval/predict/impute on the train run,
prepare, exact resume after a mid-epoch kill, and the bad inputs the issue lists, through the CLI."""

import json
import os
import signal
import subprocess
import sys

import pandas as pd
import pytest
import torch

from medrun.datasets import adnimerge as adm

FIX = ("--dataset", "adnimerge", "--fixture")


@pytest.fixture
def data(tmp_path):
    return adm.fixture(tmp_path / "d", 0)


def _complete(run_dir):
    info = json.loads((run_dir / "run.json").read_text())
    return (run_dir / "MANIFEST.sha256").exists() and info["status"] == "complete"


@pytest.mark.slow
def test_learns_on_fixture_then_eval_predict_impute(cli, runs):
    """Fold 1 of 2 (15 training subjects), the smoke settings: held-out mAUC ≥ 0.65 (chance 0.5)."""
    r = cli("train", "ad-progression", *FIX, "--runs-dir", runs, "--json")
    assert r.code == 0, r.err
    out = r.json()
    m = out["metrics"]
    assert m["mauc"] >= 0.65 and m["n_visits"] >= 40, m
    assert 0 < m["mae_ml"] < 20 and set(m["mae_ml_per_biomarker"]) == set(adm.BIOMARKERS)
    run = runs / "ad-progression" / f"train-{out['run_id'][:12]}"
    for f in ("checkpoints/model.safetensors", "checkpoints/normaliser.json", "figures/trajectories.png",
              "figures/learning_curves.png", "per_case.csv", "paper.md", "MANIFEST.sha256"):
        assert (run / f).exists(), f
    paper = (run / "paper.md").read_text()
    assert "Table 1" in paper and "0.7749" in paper and "Table 2" in paper and "4.0363" in paper
    lock = json.loads((run / "data.lock.json").read_text())["splits"]
    assert not set(lock["train"]) & set(lock["test"]) and len(lock["train"]) + len(lock["test"]) == 30

    ev = cli("eval", "ad-progression", *FIX, "--runs-dir", runs, "--json")
    assert ev.code == 0, ev.err
    assert ev.json()["metrics"]["mauc"] == m["mauc"]  # same weights, same fold

    pr = cli("predict", "ad-progression", *FIX, "--runs-dir", runs, "--json")
    assert pr.code == 0 and pr.json()["metrics"]["n"] == 15 * 5  # every follow-up slot of the test fold

    im = cli("impute", "ad-progression", *FIX, "--runs-dir", runs, "--json", "-o", "impute.split=test")
    assert im.code == 0, im.err
    im_run = runs / "ad-progression" / f"impute-{im.json()['run_id'][:12]}"
    assert _complete(im_run)
    import nibabel as nib

    vols = sorted((im_run / "imputed").glob("*.nii.gz"))
    assert len(vols) == im.json()["metrics"]["imputed_volumes"] > 0
    img = nib.load(str(vols[0]))
    assert img.shape == (16, 20, 16) and 0 <= img.get_fdata().min() and img.get_fdata().max() <= 1
    ptid, vis, mod = vols[0].name[:10], vols[0].name[11:].split("_")[0], vols[0].name.split("_")[-1][:3]
    assert mod in ("MRI", "PET") and vis in adm.VISITS and ptid.count("_S_") == 1
    bio = pd.read_csv(im_run / "imputed_biomarkers.csv")
    assert len(bio) == 15 * 6 and bio["Hippocampus"].notna().all()
    assert bio["Hippocampus_imputed"].any() and not bio["Hippocampus_imputed"].all()

    cv = cli("cv", "ad-progression", *FIX, "--runs-dir", runs, "--json")  # the fixture's cv: 2 folds, each a train run
    assert cv.code == 0, cv.err
    assert "fold 1/2 fold1: reused" in cv.err and "fold 2/2 fold2: running" in cv.err  # fold 1 is the run above
    c = cv.json()["metrics"]
    assert c["folds"] == 2 and c["mauc_n"] == 2 and len(c["mauc_ci95"]) == 2
    cv_run = runs / "ad-progression" / f"cv-{cv.json()['run_id'][:12]}"
    children = json.loads((cv_run / "run.json").read_text())["children"]
    assert children[0]["run_dir"] == out["run_dir"] and len((cv_run / "per_fold.csv").read_text().splitlines()) == 3
    assert "Folds (each a train run of its own)" in (cv_run / "paper.md").read_text()


def test_prepare_counts_and_cohort_csv(cli, runs):
    r = cli("prepare", "ad-progression", *FIX, "--runs-dir", runs, "--json")
    assert r.code == 0, r.err
    c = r.json()["metrics"]
    assert c["subjects"] == 30 and c["stable"] + c["progressive"] == 30 and c["excluded_reversion"] == 0
    assert c["table_visits"] > c["visits"]  # m06/m18 rows are not kept
    run = runs / "ad-progression" / f"prepare-{r.json()['run_id'][:12]}"
    cohort = pd.read_csv(run / "cohort.csv")
    assert set(cohort["VISCODE"]) <= set(adm.VISITS) and len(cohort) == c["visits"]
    assert (run / "figures" / "cohort.png").exists() and "1,369" in (run / "paper.md").read_text()


def test_dry_run_counts_full_size_parameters(cli, runs, data):
    r = cli("train", "ad-progression", "--dataset", "adnimerge", "--data-dir", data, "--runs-dir", runs, "--dry-run",
            "--json")
    assert r.code == 0, r.err
    assert r.json()["params_total"] == 12_799_411


def test_missing_columns_fail_before_anything_is_written(cli, runs, data):
    path = data / "ADNIMERGE.csv"
    pd.read_csv(path).drop(columns=["Hippocampus", "VISCODE"]).to_csv(path, index=False)
    r = cli("train", "ad-progression", "--dataset", "adnimerge", "--data-dir", data, "--runs-dir", runs)
    assert r.code == 3 and str(path) in r.err and "VISCODE" in r.err and "Hippocampus" in r.err
    assert "Traceback" not in r.err and not runs.exists()


def test_unknown_viscodes_name_file_and_codes(cli, runs, data):
    path = data / "ADNIMERGE.csv"
    df = pd.read_csv(path)
    df.loc[3, "VISCODE"], df.loc[7, "VISCODE"] = "uns1", "y2"
    df.to_csv(path, index=False)
    args = ("prepare", "ad-progression", "--dataset", "adnimerge", "--data-dir", data, "--runs-dir", runs)
    r = cli(*args)
    assert r.code == 3 and str(path) in r.err and "'uns1'" in r.err and "'y2'" in r.err and "ignore_viscodes" in r.err
    assert "Traceback" not in r.err
    (run,) = (runs / "ad-progression").iterdir()
    assert not (run / "MANIFEST.sha256").exists() and json.loads((run / "run.json").read_text())["status"] == "failed"
    ok = cli(*args, "-o", "dataset.ignore_viscodes=true", "--json")
    assert ok.code == 0 and ok.json()["metrics"]["dropped_viscodes"] == ["uns1", "y2"]


def test_subject_in_two_folds_is_refused(cli, runs, data, tmp_path):
    subjects = sorted(pd.read_csv(data / "ADNIMERGE.csv")["PTID"].unique())
    folds = tmp_path / "folds.csv"
    rows = [f"{s},{i % 2}" for i, s in enumerate(subjects)] + [f"{subjects[4]},1"]
    folds.write_text("PTID,fold\n" + "\n".join(rows) + "\n")
    r = cli("cv", "ad-progression", "--dataset", "adnimerge", "--data-dir", data, "--runs-dir", runs,
            "-o", f"train.folds_file={folds}", "-o", "dataset.volume=[16,20,16]", "-o", "dataset.crop=null")
    assert r.code == 3 and subjects[4] in r.err and "two folds" in r.err and str(folds) in r.err
    assert "Traceback" not in r.err
    (run,) = (runs / "ad-progression").iterdir()
    assert not (run / "MANIFEST.sha256").exists() and json.loads((run / "run.json").read_text())["status"] == "failed"


def test_missing_table_explains(cli, runs, tmp_path):
    (tmp_path / "x").mkdir()
    r = cli("train", "ad-progression", "--dataset", "adnimerge", "--data-dir", tmp_path / "x", "--runs-dir", runs)
    assert r.code == 3 and "ADNIMERGE.csv" in r.err and "--fixture" in r.err and not runs.exists()


@pytest.mark.slow
def test_kill_mid_epoch_and_resume_is_bitwise_identical(tmp_path):
    """2 epochs straight against a SIGKILL at step 7 of 8 (batch 4: 4 steps per epoch) + the same command: the
    resumed run continues in the killed run's directory from step 6 and ends with bitwise-identical weights."""
    from safetensors.torch import load_file

    def train(runs, **env):
        cmd = [sys.executable, "-m", "medrun.cli.main", "train", "ad-progression", *FIX, "--runs-dir", str(runs),
               "-o", "train.batch_size=4", "-o", "trainer.checkpoint_every_n_steps=2", "--json"]
        return subprocess.run(cmd, env={**os.environ, "MEDRUN_PLAIN": "1", **env}, capture_output=True, text=True,
                              timeout=300)

    straight = train(tmp_path / "a")
    assert straight.returncode == 0, straight.stderr[-2000:]
    killed = train(tmp_path / "b", MEDRUN_TEST_KILL_AT_STEP="7")
    assert killed.returncode == -signal.SIGKILL
    run_b = next((tmp_path / "b" / "ad-progression").glob("train-*"))
    ckpt = torch.load(run_b / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 6 and ckpt["epoch"] == 1 and not (run_b / "MANIFEST.sha256").exists()
    resumed = train(tmp_path / "b")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads(resumed.stdout)["run_dir"] == str(run_b)  # (fails if medrun's code is edited meanwhile)
    run_a = next((tmp_path / "a" / "ad-progression").glob("train-*"))
    a, b = (load_file(str(r / "checkpoints" / "model.safetensors")) for r in (run_a, run_b))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads(straight.stdout)["metrics"]["mauc"] == json.loads(resumed.stdout)["metrics"]["mauc"]


def test_scoring_undoes_the_normalisation_and_reports_the_ttest(data):
    """A forecast equal to the truth scores MAE 0 ml and accuracy 1 (so the z-score and ICV division are undone
    exactly); an offset of 0.1 z in Hippocampus is 0.1·sd·ICV/1000 ml. paper.md shows the paired t-test."""
    import numpy as np

    from medrun.pipelines.ad_progression.pipeline import Normaliser, Records, Subjects, paper_sections, score

    df = adm.read_adnimerge(data / "ADNIMERGE.csv")
    cohort = adm.select_cohort(df)
    rec = Records(cohort, adm.scan_images(data / "images", cohort), list(adm.VISITS))
    idx = list(range(len(rec)))
    norm = Normaliser(rec, idx[:20])
    ds = Subjects(rec, idx, norm, (16, 20, 16), None, "none")
    prob = np.eye(3)[np.clip(rec.dx, 0, 2)].astype(float)
    x_hat = np.nan_to_num(norm.apply(rec.x))
    m, rows = score(rec, ds, norm, {"prob": prob, "x_hat": x_hat})
    assert m["accuracy"] == 1.0 and m["mauc"] == 1.0 and m["mae_ml"] < 1e-9 and len(rows) == m["n_visits"]
    hip = adm.BIOMARKERS.index("Hippocampus")
    x_hat[:, :, hip] += 0.1
    m2, _ = score(rec, ds, norm, {"prob": prob, "x_hat": x_hat})
    observed = [(i, t) for i in idx for t in range(1, 6)
                if np.isfinite(rec.x[i, t, hip]) and np.isfinite(rec.icv[i, t])]
    expected = np.mean([0.1 * norm.sd[hip] * rec.icv[i, t] / 1000 for i, t in observed])
    assert m2["mae_ml_per_biomarker"]["Hippocampus"] == pytest.approx(expected, rel=1e-9)
    assert m2["mae_ml_per_biomarker"]["Ventricles"] < 1e-9
    fake = {**m, "accuracy_sd": 0.01, "baseline_accuracy": 0.5, "baseline_precision_macro": 0.5,
            "baseline_recall_macro": 0.5, "baseline_mauc": 0.6, "ttest_p_accuracy": 0.03, "ttest_p_mauc": 0.2}
    text = "\n".join(paper_sections(fake, 5))
    assert "biomarker-only" in text and "Paired t-test" in text and "0.0300" in text and "MRI+PET+Bio+Dg+Gen" in text
