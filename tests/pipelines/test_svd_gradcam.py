"""svd-gradcam end to end on the MURA fixture: the smoke thresholds, the explain stage on a parent run (issue 7
item 1: run.json names the parent, the id follows the parent, the parent's weights are checked) and bad input."""

import json

import numpy as np
import pytest

from medrun.cli.main import main

TINY = ("--dataset", "mura", "--fixture")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One fixture train run (the card's smoke run: tiny CNN, 3 epochs) shared by the tests below."""
    runs = tmp_path_factory.mktemp("svd-runs")
    out = tmp_path_factory.mktemp("svd-out") / "train.json"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["train", "svd-gradcam", *TINY, "--runs-dir", str(runs), "--json"])
    assert code == 0, buf.getvalue()
    result = json.loads(buf.getvalue())
    out.write_text(buf.getvalue())
    return runs, result


EXPLAIN_FAST = ("-o", "explain.smooth_samples=2", "-o", "explain.overlays=2")


@pytest.mark.slow
def test_smoke_thresholds(cli, trained):
    """The card: valid AUROC > 0.8 within 3 epochs, SVD-Grad-CAM points at the blob, full rank = Grad-CAM."""
    runs, out = trained
    m = out["metrics"]
    assert m["auroc"] > 0.8, m
    assert m["pointing_svd"] >= 0.5 > m["pointing_chance"], m
    assert m["svd_fullrank_vs_gradcam_maxdiff"] < 1e-6
    assert m["params_total"] == 23_617 and m["epochs_run"] == 3
    run = runs / "svd-gradcam" / f"train-{out['run_id'][:12]}"
    for f in ("checkpoints/model.safetensors", "per_case.csv", "paper.md", "figures/learning_curves.png",
              "figures/confusion_matrix.png", "MANIFEST.sha256"):
        assert (run / f).exists(), f
    assert {len(v) for v in json.loads((run / "data.lock.json").read_text())["splits"].values()} == {40, 16}

    ev = cli("eval", "svd-gradcam", *TINY, "--runs-dir", runs, "--json")  # finds the train run by its manifest
    assert ev.code == 0, ev.err
    assert ev.json()["metrics"]["auroc"] == m["auroc"] and ev.json()["metrics"]["split"] == "valid"
    pred = cli("predict", "svd-gradcam", *TINY, "--runs-dir", runs, "--json")
    assert pred.code == 0 and pred.json()["metrics"]["n"] == 16


@pytest.mark.slow
def test_train_reports_svd_gradcam_against_gradcam(trained):
    """Issue 22: the train run scores rank-1 SVD-Grad-CAM against Grad-CAM on the explained class (max map
    difference and ADCC gain, the number the paper's Table 2 puts at +15.88), so a smoke run can see the gap."""
    m = trained[1]["metrics"]
    assert m["adcc_gain_svd"] == pytest.approx(m["adcc_svd"] - m["adcc_gradcam"])
    assert 0 < m["adcc_gradcam"] <= 100 and 0 < m["adcc_svd"] <= 100
    assert 0 <= m["svd_vs_gradcam_maxdiff"] <= 1 and m["svd_fullrank_vs_gradcam_maxdiff"] < 1e-6


@pytest.mark.slow
def test_explain_on_parent_run(cli, trained):
    runs, out = trained
    r = cli("explain", "svd-gradcam", *TINY, "--runs-dir", runs, "--run", out["run_id"][:8], *EXPLAIN_FAST, "--json")
    assert r.code == 0, r.err
    ex = r.json()
    m = ex["metrics"]
    assert ex["run_id"] != out["run_id"] and m["n_images"] == 16
    for method in ("cam", "gradcam", "smooth", "ablation", "score", "eigen", "svd"):  # Table 2's seven rows
        for k in ("avg_drop", "avg_increase", "coherency", "complexity", "adcc"):
            assert np.isfinite(m[f"{k}_{method}"]), (k, method)
        assert 0 <= m[f"adcc_{method}"] <= 100 and 0 <= m[f"complexity_{method}"] <= 100
    assert m["svd_fullrank_vs_gradcam_maxdiff"] < 1e-6 and m["pointing_svd"] >= 0.5
    assert m["adcc_gain_svd"] == pytest.approx(m["adcc_svd"] - m["adcc_gradcam"], abs=2e-4)
    run = runs / "svd-gradcam" / f"explain-{ex['run_id'][:12]}"
    info = json.loads((run / "run.json").read_text())
    assert info["parent"] == out["run_id"] and info["stage"] == "explain"
    from medrun.artifacts import sha256_file

    weights = runs / "svd-gradcam" / f"train-{out['run_id'][:12]}" / "checkpoints" / "model.safetensors"
    assert info["parent_weights_sha256"] == sha256_file(weights)
    maps = np.load(run / "maps" / "svd.npy")
    assert maps.shape == (16, 16, 16) and maps.min() >= 0
    assert len(list((run / "figures").glob("overlay_patient*.png"))) == 2
    paper = (run / "paper.md").read_text()
    assert "Table 2" in paper and "| svd |" in paper and "86.26" in paper
    rows = (run / "per_case.csv").read_text().splitlines()
    assert len(rows) == 17 and "svd_coherency" in rows[0]

    # the same explain again is reused; the id follows the parent: another train run gives another explain id
    again = cli("explain", "svd-gradcam", *TINY, "--runs-dir", runs, "--run", out["run_id"][:8], *EXPLAIN_FAST,
                "--json")
    assert again.json()["reused"] and again.json()["run_id"] == ex["run_id"]
    other = cli("train", "svd-gradcam", *TINY, "--runs-dir", runs, "-o", "train.epochs=1",
                "-o", "train.check_rank_full=false", "--json")
    assert other.code == 0, other.err
    # (with Exp. 1 and 2 rows and the printed Eq. 7–10)
    sweep = ("-o", "explain.methods=[svd]", "-o", "explain.sweep_ranks=[2,16]", "-o", "explain.variants=[uv,u]",
             "-o", "explain.literal_eq=true", "--json")
    ex2 = cli("explain", "svd-gradcam", *TINY, "--runs-dir", runs, "--run", other.json()["run_id"], *EXPLAIN_FAST,
              *sweep)
    ex3 = cli("explain", "svd-gradcam", *TINY, "--runs-dir", runs, "--run", out["run_id"], *EXPLAIN_FAST, *sweep)
    assert ex2.code == ex3.code == 0, ex3.err
    assert ex2.json()["run_id"] != ex3.json()["run_id"]
    ex2_run = runs / "svd-gradcam" / f"explain-{ex2.json()['run_id'][:12]}"
    assert json.loads((ex2_run / "run.json").read_text())["parent"] \
        == other.json()["run_id"]
    assert {"adcc_svd", "adcc_svd_n2", "adcc_svd_n16", "adcc_svd_uv", "adcc_svd_u"} <= set(ex3.json()["metrics"])


@pytest.mark.slow
def test_monai_bundle_predicts_what_medrun_predicts(cli, trained, tmp_path):
    """`medrun export`: MONAI's bundle runner (σ(logit), preprocessing as eval's) gives medrun predict's scores."""
    import csv
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    runs, out = trained
    run = runs / "svd-gradcam" / f"train-{out['run_id'][:12]}"
    r = cli("export", run, "--format", "monai-bundle", "--out", tmp_path / "bundle", "--runs-dir", runs, "--json")
    assert r.code == 0, r.err
    lock = json.loads((run / "data.lock.json").read_text())
    images = tmp_path / "images"
    images.mkdir()
    for rel in lock["splits"]["valid"][:4]:
        shutil.copy(Path(lock["trees"]["mura"]["root"]) / rel, images / rel.replace("/", "__"))
    bundle, res = tmp_path / "bundle", tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", bundle / "configs" /
                           "inference.yaml", "--meta_file", bundle / "configs" / "metadata.json", "--bundle_root",
                           bundle, "--input_dir", images, "--output_dir", res], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    p = cli("predict", "svd-gradcam", *TINY, "--runs-dir", runs, "--run", run, "-o", f"predict.input={images}",
            "--json")
    assert p.code == 0, p.err
    with open(Path(p.json()["run_dir"]) / "per_case.csv") as f:
        ours = {Path(row["file"]).name: row for row in csv.DictReader(f)}
    preds = json.loads((res / "predictions.json").read_text())
    assert len(preds) == 4 == len(ours)
    for name, probs in preds.items():
        assert abs(float(ours[name]["prob_abnormal"]) - probs["abnormal"]) < 2e-6, name
        assert abs(probs["normal"] + probs["abnormal"] - 1) < 1e-6


@pytest.mark.slow
def test_tampered_parent_weights_are_refused(cli, trained, tmp_path):
    import shutil

    runs, out = trained
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    before = set((copy / "svd-gradcam").glob("explain-*"))
    weights = copy / "svd-gradcam" / f"train-{out['run_id'][:12]}" / "checkpoints" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    r = cli("explain", "svd-gradcam", *TINY, "--runs-dir", copy, "--run", out["run_id"], "-o", "explain.methods=[svd]")
    assert r.code == 3 and "does not match its run's MANIFEST.sha256" in r.err and "Traceback" not in r.err
    (ex,) = set((copy / "svd-gradcam").glob("explain-*")) - before
    assert not (ex / "MANIFEST.sha256").exists() and json.loads((ex / "run.json").read_text())["status"] == "failed"


@pytest.mark.slow
def test_bad_target_layer_lists_valid_names(cli, trained):
    runs, out = trained
    r = cli("explain", "svd-gradcam", *TINY, "--runs-dir", runs, "--run", out["run_id"],
            "-o", "explain.target_layer=layer4")
    assert r.code == 2 and "target layer 'layer4'" in r.err and "relu" in r.err and "features.6" in r.err
    assert "Traceback" not in r.err


@pytest.mark.slow
def test_weights_that_do_not_fit(cli, trained, tmp_path):
    import torch

    runs, out = trained
    bad = tmp_path / "other.pt"
    torch.save({"conv.weight": torch.zeros(3, 3)}, bad)
    r = cli("explain", "svd-gradcam", *TINY, "--runs-dir", runs, "--checkpoint", bad, "-o", "explain.methods=[svd]")
    assert r.code == 2 and "do not fit this model" in r.err and "Traceback" not in r.err
    weights = runs / "svd-gradcam" / f"train-{out['run_id'][:12]}" / "checkpoints" / "model.safetensors"
    wide = cli("explain", "svd-gradcam", *TINY, "--runs-dir", runs, "-o", "model.width=16",
               "-o", "explain.methods=[svd]", "--checkpoint", weights)
    assert wide.code == 2 and "other shapes" in wide.err
    init = cli("train", "svd-gradcam", *TINY, "--runs-dir", runs, "-o", "model.arch=densenet169",
               "-o", f"model.weights={bad}")
    assert init.code == 2 and "do not fit DenseNet-169's features" in init.err and "torchvision densenet169" in init.err


def test_run_of_another_pipeline_or_incomplete_run_is_refused(cli, runs, make_run, data):
    other = make_run(runs, data, run_id="cd" * 32, pipeline="ad-lite")
    r = cli("explain", "svd-gradcam", *TINY, "--runs-dir", runs, "--run", other)
    assert r.code == 2 and "is a ad-lite train run, not a svd-gradcam train run" in r.err
    half = make_run(runs, data, run_id="ef" * 32, pipeline="svd-gradcam", status="running")
    r = cli("explain", "svd-gradcam", *TINY, "--runs-dir", runs, "--run", half)
    assert r.code == 2 and "is not complete" in r.err
    assert not list((runs / "svd-gradcam").glob("explain-*"))
    none = cli("explain", "svd-gradcam", *TINY, "--runs-dir", runs / "empty")
    assert none.code == 2 and "medrun train svd-gradcam --dataset mura --fixture" in none.err


def test_unreadable_image_names_the_file(cli, runs, tmp_path):
    from medrun.datasets import get

    root = get("mura").make_fixture(tmp_path / "d", 0)
    bad = sorted((root / "valid" / "XR_ELBOW").glob("patient*/study1_*/image1.png"))[2]
    bad.write_bytes(b"not a png")
    r = cli("train", "svd-gradcam", "--dataset", "mura", "--data-dir", root, "--runs-dir", runs,
            "-o", "model.arch=tiny", "-o", "dataset.img_size=32", "-o", "train.epochs=1")
    assert r.code == 3 and bad.name in r.err and bad.parent.name in r.err and "Traceback" not in r.err
    assert not runs.exists()  # found by the header check before a run directory opens


def test_wrong_folder_and_study_type(cli, runs, tmp_path):
    from medrun.datasets import get

    root = get("mura").make_fixture(tmp_path / "d", 0)
    r = cli("train", "svd-gradcam", "--dataset", "mura", "--data-dir", root.parent, "--runs-dir", runs)
    assert r.code == 3 and "use " in r.err and "MURA-v1.1 instead" in r.err
    r = cli("train", "svd-gradcam", "--dataset", "mura", "--data-dir", root, "--runs-dir", runs,
            "-o", "dataset.study_type=XR_HAND")
    assert r.code == 3 and "no XR_HAND folder" in r.err
    assert not runs.exists()


@pytest.mark.slow
def test_own_images_learn_explain_and_unlabelled_files_predict(cli, runs, unlabelled_images):
    """Issue 21: ``--dataset imagefolder`` with two of the fixture's class folders (16-bit PNG, float TIFF, DICOM
    with 12-bit values; the positive class's blob is brighter): the tiny CNN learns, the CAMs run on the valid split,
    and predict names the trained classes for a folder holding a DICOM, a 16-bit PNG and a note."""
    from pathlib import Path

    r = cli("train", "svd-gradcam", "--dataset", "imagefolder", "--fixture", "--runs-dir", runs, "--json")
    assert r.code == 0, r.err
    assert r.json()["metrics"]["auroc"] >= 0.8, r.json()["metrics"]  # chance 0.5
    ex = cli("explain", "svd-gradcam", "--run", r.json()["run_id"], "--runs-dir", runs, "-o",
             "explain.methods=[gradcam,svd]", "-o", "explain.overlays=1", "--json")
    assert ex.code == 0, ex.err
    assert ex.json()["metrics"]["n_images"] == 6 and list((Path(ex.json()["run_dir"]) / "figures").glob("overlay_*"))
    new = unlabelled_images
    p = cli("predict", "svd-gradcam", "--run", r.json()["run_id"], "-o", f"predict.input={new}", "--runs-dir", runs,
            "--json")
    assert p.code == 0, p.err
    assert f"skipped {new / 'notes.txt'}: not one of" in p.err
    rows = (Path(p.json()["run_dir"]) / "per_case.csv").read_text().splitlines()
    assert rows[0] == "file,pred,prob_right" and len(rows) == 3
    assert p.json()["metrics"]["predicted"] == {"left": 1, "right": 1}
