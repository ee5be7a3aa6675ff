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

# the fixture manifest trains 8 epochs (its smoke run needs them for the image branch's gain); the learning check
# keeps the card's 2, which already give a held-out mAUC ≥ 0.65
FIX = ("--dataset", "adnimerge", "--fixture", "-o", "train.epochs=2")


@pytest.fixture(scope="module")
def _generated(tmp_path_factory):
    """The fixture generated once per module (about 10 s under load); each test gets its own copy to edit."""
    return adm.fixture(tmp_path_factory.mktemp("adnimerge"), 0)


@pytest.fixture
def data(tmp_path, _generated):
    import shutil

    return shutil.copytree(_generated, tmp_path / "d" / "ADNI")


def _complete(run_dir):
    info = json.loads((run_dir / "run.json").read_text())
    return (run_dir / "MANIFEST.sha256").exists() and info["status"] == "complete"


@pytest.mark.slow
def test_learns_on_fixture_then_eval_predict_impute(cli, runs):
    """Fold 1 of 2 (15 training subjects), the smoke settings at 2 epochs: held-out mAUC ≥ 0.65 (chance 0.5)."""
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
    """1 epoch straight against a SIGKILL at step 3 of 4 (batch 4, 15 training subjects: 4 steps) + the same command:
    the resumed run continues mid-epoch in the killed run's directory from step 2 (the sampler's position, every RNG
    state, the optimizer) and ends with bitwise-identical weights. (It was 2 epochs killed at step 7: 47 s; one
    epoch exercises the same mid-epoch resume at about half the steps.)"""
    from safetensors.torch import load_file

    def train(runs, **env):
        cmd = [sys.executable, "-m", "medrun.cli.main", "train", "ad-progression", *FIX, "--runs-dir", str(runs),
               "-o", "train.epochs=1", "-o", "train.batch_size=4", "-o", "trainer.checkpoint_every_n_steps=2", "--json"]
        return subprocess.run(cmd, env={**os.environ, "MEDRUN_PLAIN": "1", **env}, capture_output=True, text=True,
                              timeout=300)

    straight = train(tmp_path / "a")
    assert straight.returncode == 0, straight.stderr[-2000:]
    killed = train(tmp_path / "b", MEDRUN_TEST_KILL_AT_STEP="3")
    assert killed.returncode == -signal.SIGKILL
    run_b = next((tmp_path / "b" / "ad-progression").glob("train-*"))
    ckpt = torch.load(run_b / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 2 and ckpt["epoch"] == 0 and not (run_b / "MANIFEST.sha256").exists()
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


@pytest.fixture
def one_thread():
    """Tiny tensors: one intra-op thread (on a loaded machine, waking a second thread per op costs more than the op)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _records(data, files=None):
    from medrun.pipelines.ad_progression.data import Records

    cohort = adm.select_cohort(adm.read_adnimerge(data / "ADNIMERGE.csv"))
    return Records(cohort, adm.scan_images(data / "images", cohort) if files is None else files, list(adm.VISITS))


def test_fixture_images_carry_signal_the_biomarkers_lack(data, one_thread):
    """The fixture's hidden amyloid status moves the diagnosis and shows only in the images: forecasting the next DX
    from the last observed volumes, a logistic regression gains ≥ 0.08 mAUC when the subject's mean image intensity
    is added (about 0.84 → 0.97), so the image branch has something to add (the smoke run requires the model's)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import cross_val_predict

    from medrun.pipelines.ad_progression.data import N_BIO

    rec = _records(data)
    img = np.full(len(rec), np.nan)
    for (ptid, _, _), f in sorted(rec.images.items()):
        i = rec.subjects.index(ptid)
        if np.isnan(img[i]):  # the subject's first volume
            img[i] = adm.load_volume(f, (16, 20, 16), None).mean()
    rows = [(rec.x[i, s, :N_BIO], img[i], rec.dx[i, t]) for i in range(len(rec)) for t in range(1, 6)
            if rec.dx[i, t] >= 0 and (s := max([u for u in range(t) if np.isfinite(rec.x[i, u, :N_BIO]).all()],
                                               default=-1)) >= 0]
    bio = np.array([r[0] for r in rows])
    both = np.column_stack([bio, np.nan_to_num(np.array([r[1] for r in rows]), nan=np.nanmean(img))])
    y = np.array([r[2] for r in rows])
    auc = {}
    for name, X in (("bio", bio), ("bio+img", both)):
        X = (X - X.mean(0)) / X.std(0)
        p = cross_val_predict(LogisticRegression(max_iter=1000), X, y, cv=5, method="predict_proba")
        auc[name] = roc_auc_score(y, p, multi_class="ovo")
    assert set(y) == {0, 1, 2} and auc["bio+img"] - auc["bio"] >= 0.08, auc


def test_grud_and_minimalrnn_sizes_decay_and_learning(data, one_thread):
    """Parameter counts by hand at the card's hidden 128 (13 tabular inputs + 3 DX = 16 inputs); GRU-D keeps an
    observed input as it is and decays a missing one to the training mean; both learn the fixture's next-visit DX
    from the tabular inputs in 60 full-batch Adam steps (held-out mAUC above chance), images never read."""

    from medrun.metrics import classification as cm
    from medrun.models import create
    from medrun.pipelines.ad_progression.data import Normaliser, Subjects
    from medrun.pipelines.ad_progression.pipeline import forward

    d, h = 16, 128
    grud = 2 * d + (d * h + h) + ((2 * d + h) * 2 * h + 2 * h) + (2 * d * h + h) + h * h
    minimal = (d * h + h) + (2 * h * h + h)
    heads = (h * 13 + 13) + (h * 3 + 3) + 2
    assert sum(p.numel() for p in create("grud").parameters()) == grud + heads == 66_098
    assert sum(p.numel() for p in create("minimalrnn").parameters()) == minimal + heads == 37_138

    net = create("grud", hidden=8)
    torch.nn.init.ones_(net.decay_x)  # (zero at init: no decay until learnt)
    obs, m = torch.randn(2, 16), torch.tensor([[1.0] * 16, [0.0] * 16])
    _, v, _ = net.step(obs, m, torch.full((2, 16), 100.0), torch.ones(2, 16), torch.zeros(2, 8), torch.zeros(16))
    assert torch.equal(v[0], obs[0]) and torch.allclose(v[1], torch.zeros(16), atol=1e-6)  # long gap: the mean

    rec = _records(data, files={})
    train, test = list(range(0, 30, 2)), list(range(1, 30, 2))
    norm = Normaliser(rec, train)
    fill = torch.from_numpy(norm.fill)
    batch = {k: v for k, v in torch.utils.data.default_collate(
        [Subjects(rec, train, norm, (1, 1, 1), None, "none")[k] for k in range(len(train))]).items()}
    held = torch.utils.data.default_collate([Subjects(rec, test, norm, (1, 1, 1), None, "none")[k]
                                             for k in range(len(test))])
    for arch in ("grud", "minimalrnn"):
        torch.manual_seed(0)
        net = create(arch, hidden=32)
        opt = torch.optim.Adam(net.parameters(), lr=0.01)
        first = None
        for _ in range(60):
            loss = net.losses(forward(net, batch, fill), batch)["loss"]
            first = float(loss) if first is None else first
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            prob = torch.softmax(forward(net, held, fill)["dx_logits"], -1)[:, 1:].reshape(-1, 3).numpy()
        y = held["dx"][:, 1:].reshape(-1).numpy()
        assert float(loss) < first and cm.auroc(y[y >= 0], prob[y >= 0], average="ovo") > 0.6, arch


def test_modalities_option_is_canonical_and_selects_the_volumes(data):
    """model.modalities ([MRI] or [PET], Fig. 5) is one spelling per set (one run id), and the model reads only those
    volumes; without the image branch (or with GRU-D / MinimalRNN) it reads none."""
    from medrun.pipelines.ad_progression.config import Model
    from medrun.pipelines.ad_progression.data import model_images

    assert Model(modalities=["PET", "MRI", "PET"]).modalities == ["MRI", "PET"]
    with pytest.raises(ValueError):
        Model(modalities=[])
    cohort = adm.select_cohort(adm.read_adnimerge(data / "ADNIMERGE.csv"))
    files = adm.scan_images(data / "images", cohort)
    pet = model_images(files, Model(modalities=["PET"]))
    assert pet and {k[2] for k in pet} == {"PET"} and len(pet) == sum(k[2] == "PET" for k in files)
    assert model_images(files, Model()) == files
    assert model_images(files, Model(use_images=False)) == {} == model_images(files, Model(arch="grud"))


def test_baselines_page_sets_each_row_beside_the_paper():
    """paper.md of `medrun baselines`: every row beside the paper's Table 1 (ACC, mAUC) and Table 2 (MAE) values where
    the paper has the model, the t-test against ADxPro, the image branch's gain, and BiPro / CNN-BRNN as not
    reproduced; the smoke keys are paper-checked for the rows the paper has."""
    from medrun.pipelines.ad_progression import SPEC
    from medrun.pipelines.ad_progression.baselines import ROWS, _expect, _sections
    from medrun.pipelines.ad_progression.config import VARIANTS

    assert set(ROWS) == set(VARIANTS)
    names = list(VARIANTS)
    met = {f"{n}.{k}": 0.5 + i / 100 for i, n in enumerate(names) for k in ("accuracy", "mauc", "mae_ml")}
    met.update({f"{n}.ttest_p_mauc": 0.04 for n in names[1:]}, **{"image_gain.mauc": 0.07, "image_gain.accuracy": 0.1})
    text = "\n".join(_sections(SPEC, names, met, 5))
    row = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "0.7632" in row["grud"] and "5.5422" in row["grud"] and "0.7549" in row["minimalrnn"]
    assert "0.7749" in row["adxpro"] and "PET+Bio+Dg+Gen" in row["pet-only"] and "0.04" in row["mri-only"]
    assert "not reproduced" in row["BiPro"] and "not reproduced" in row["CNN-BRNN"] and "+0.0700" in text
    assert _expect(SPEC, names) == {"adxpro.mauc": 0.7749, "adxpro.mae_ml": 4.0363, "grud.mauc": 0.7632,
                                    "grud.mae_ml": 5.5422, "minimalrnn.mauc": 0.7549, "minimalrnn.mae_ml": 3.9373}
