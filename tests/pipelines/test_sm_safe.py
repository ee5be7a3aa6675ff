"""sm-safe: learning on the MSD fixture (two tasks), the stages on a finished run, the ablation table, bad input."""

import csv
import json

import nibabel as nib
import numpy as np
import pytest
import torch

# A smaller configuration than the smoke manifest (msd.fixture.yaml) that still clearly beats chance in ~45 steps
# per task: 4 stem channels, one residual unit, 24³ patches, lr 3e-3.
TINY = ["-o", "model.fusion_channels=4", "-o", "model.unet_channels=[8,16,32]", "-o", "model.num_res_units=1",
        "-o", "train.patch_size=[24,24,24]", "-o", "train.epochs=3", "-o", "train.steps_per_epoch=15",
        "-o", "train.lr=0.003"]
QUICK = [*TINY, "-o", "train.epochs=1", "-o", "train.steps_per_epoch=3"]  # runs the code, learns nothing


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Two OpenMP threads on a shared 2-core machine make small 3D convolutions many times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from medrun.cli.main import main

    runs = tmp_path_factory.mktemp("smsafe") / "runs"
    assert main(["train", "sm-safe", "--dataset", "msd", "--fixture", "--runs-dir", str(runs), *TINY]) == 0
    (run,) = (runs / "sm-safe").glob("train-*")
    return runs, run


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _no_complete_run(runs):
    return not list(runs.glob("**/MANIFEST.sha256"))


def test_learns_on_fixture(trained):
    """Held-out mean foreground Dice over both tasks > 0.5 (an empty prediction scores 0; the smoke run's bar)."""
    runs, run = trained
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dice"] > 0.5 and metrics["n_tasks"] == 2, metrics
    assert set(metrics["tasks"]) == {"Task90_SynthMulti", "Task91_SynthCT"}
    assert all(t["dice"] > 0.3 for t in metrics["tasks"].values()), metrics["tasks"]
    for f in ("per_case.csv", "per_task.csv", "paper.md", "checkpoints/Task90_SynthMulti.safetensors",
              "checkpoints/Task91_SynthCT.safetensors", "checkpoints/Task90_SynthMulti/last.ckpt",
              "logs/Task90_SynthMulti/metrics.csv", "figures/learning_curves_Task91_SynthCT.png",
              "figures/overlay_Task90_SynthMulti_syn_002.png", "MANIFEST.sha256"):
        assert (run / f).exists(), f
    rows = _rows(run / "per_case.csv")
    assert len(rows) == 2 * 2 + 2 * 1  # 2 held-out cases × (2 labels of Task90 + 1 of Task91)
    assert {r["label"] for r in rows} == {"blob", "cube", "organ"}
    splits = json.loads((run / "data.lock.json").read_text())["splits"]
    assert {k: len(v) for k, v in splits.items()} == {"Task90_SynthMulti/train": 6, "Task90_SynthMulti/test": 2,
                                                       "Task91_SynthCT/train": 6, "Task91_SynthCT/test": 2}
    assert splits["Task90_SynthMulti/test"][0].startswith("imagesTr/syn_")  # relative to the task folder
    paper = (run / "paper.md").read_text()
    assert "Table 1" in paper and "| dice |" in paper and "0.8700" in paper and "Task91_SynthCT | organ" in paper


def test_eval_uses_the_train_run(cli, trained):
    runs, run = trained
    r = cli("eval", "sm-safe", "--dataset", "msd", "--fixture", "--runs-dir", runs, "--json", *TINY)
    assert r.code == 0, r.err
    out = r.json()
    assert out["metrics"]["dice"] == json.loads((run / "metrics.json").read_text())["dice"]
    ev = runs / "sm-safe" / f"eval-{out['run_id'][:12]}"
    assert json.loads((ev / "run.json").read_text())["parent"] == json.loads((run / "run.json").read_text())["id"]


def test_eval_with_one_tasks_checkpoint(cli, trained):
    runs, run = trained
    ck = run / "checkpoints" / "Task91_SynthCT.safetensors"
    r = cli("eval", "sm-safe", "--dataset", "msd", "--fixture", "--runs-dir", runs, "--json", *TINY,
            "--checkpoint", ck, "-o", "dataset.tasks=[Task91_SynthCT]")
    assert r.code == 0, r.err
    train_metrics = json.loads((run / "metrics.json").read_text())
    assert r.json()["metrics"]["dice"] == train_metrics["tasks"]["Task91_SynthCT"]["dice"]
    both = cli("eval", "sm-safe", "--dataset", "msd", "--fixture", "--runs-dir", runs, *TINY, "--checkpoint", ck)
    assert both.code == 2 and "dataset.tasks=[TaskXX_Name]" in both.err and "Traceback" not in both.err


def test_summarize_prints_mean_sd_across_the_two_tasks(cli, trained):
    runs, run = trained
    r = cli("summarize", "sm-safe", "--dataset", "msd", "--fixture", "--runs-dir", runs, "--json", *TINY)
    assert r.code == 0, r.err
    m = r.json()["metrics"]
    dice = [t["dice"] for t in m["tasks"].values()]
    assert m["n_tasks"] == 2 and np.isclose(m["dice"], np.mean(dice)) and np.isclose(m["dice_sd"], np.std(dice, ddof=1))
    assert f"Dice {m['dice']:.4f} ± {m['dice_sd']:.4f}" in r.err and "across 2 task(s)" in r.err
    summary = runs / "sm-safe" / f"summarize-{r.json()['run_id'][:12]}"
    assert [row["metric"] for row in _rows(summary / "summary.csv")] == ["dice", "iou", "hd95"]
    assert "0.87 ± 0.08" in (summary / "paper.md").read_text()  # the paper's SM-SAFE row beside this run's


def test_fuse_maps_are_nifti_weights_summing_to_one(cli, trained):
    runs, _ = trained
    r = cli("fuse-maps", "sm-safe", "--dataset", "msd", "--fixture", "--runs-dir", runs, "--json", *TINY)
    assert r.code == 0, r.err
    out = runs / "sm-safe" / f"fuse-maps-{r.json()['run_id'][:12]}" / "fuse_maps"
    t2 = nib.load(out / "Task90_SynthMulti" / "syn_002_w0_T2.nii.gz").get_fdata()
    adc = nib.load(out / "Task90_SynthMulti" / "syn_002_w1_ADC.nii.gz").get_fdata()
    assert t2.shape == (32, 32, 32) and np.allclose(t2 + adc, 1, atol=1e-4)
    assert (out / "Task91_SynthCT" / "synct_002_w0_CT.nii.gz").exists()  # one modality: weight 1 everywhere


def test_predict_writes_label_maps_on_each_images_grid(cli, trained):
    runs, _ = trained
    r = cli("predict", "sm-safe", "--dataset", "msd", "--fixture", "--runs-dir", runs, "--json", *TINY)
    assert r.code == 0, r.err
    run = runs / "sm-safe" / f"predict-{r.json()['run_id'][:12]}"
    rows = _rows(run / "per_case.csv")
    assert len(rows) == 4 and {r["task"] for r in rows} == {"Task90_SynthMulti", "Task91_SynthCT"}
    for row in rows:
        pred, image = nib.load(run / row["prediction"]), nib.load(row["image"])
        assert pred.shape == image.shape[:3] and np.allclose(pred.affine, image.affine)
        assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1, 2}


def test_ablate_writes_one_table(cli, runs):
    r = cli("ablate", "sm-safe", "--dataset", "msd", "--fixture", "--runs-dir", runs, "--json", *QUICK,
            "-o", "dataset.tasks=[Task90_SynthMulti]")
    assert r.code == 0, r.err
    run = runs / "sm-safe" / f"ablate-{r.json()['run_id'][:12]}"
    rows = _rows(run / "ablation.csv")
    assert [(row["variant"], row["model"]) for row in rows] == [
        ("unet", "unet"), ("amf-net", "amf-net"), ("sm-safe", "sm-safe"), ("sm-safe-hierarchical", "sm-safe")]
    assert int(rows[0]["params"]) < int(rows[1]["params"]) < int(rows[2]["params"]) < int(rows[3]["params"])
    paper = (run / "paper.md").read_text()
    assert "Table 1" in paper and "0.78 ± 0.12" in paper and "ordering" in paper
    children = {c["name"]: c for c in json.loads((run / "run.json").read_text())["children"]}
    assert list(children) == ["unet", "amf-net", "sm-safe", "sm-safe-hierarchical"]  # each variant a train run
    amf = runs / "sm-safe" / f"train-{children['amf-net']['id'][:12]}"
    assert (amf / "checkpoints" / "Task90_SynthMulti.safetensors").exists() and (amf / "MANIFEST.sha256").exists()
    assert json.loads((amf / "metrics.json").read_text())["variant"] == "amf-net"
    assert {row["variant"] for row in _rows(run / "per_case.csv")} == set(children)


def test_ablate_variant_with_unknown_key_is_a_manifest_error(cli, runs):
    r = cli("ablate", "sm-safe", "--dataset", "msd", "--fixture", "--runs-dir", runs, *QUICK,
            "-o", "ablate.variants={bad: {model.nope: 1}}")
    assert r.code == 2 and "ablate.variants.bad: unknown key 'model.nope'" in r.err and "Traceback" not in r.err
    assert _no_complete_run(runs)


def test_cv_reports_out_of_fold_means_and_reuses_a_trained_fold(cli, runs):
    args = ("--dataset", "msd", "--fixture", "--runs-dir", runs, "--json", *QUICK,
            "-o", "dataset.tasks=[Task91_SynthCT]", "-o", "dataset.folds=2")
    fold0 = cli("train", "sm-safe", *args)  # dataset.fold 0: the cv's first fold
    assert fold0.code == 0, fold0.err
    r = cli("cv", "sm-safe", *args)
    assert r.code == 0, r.err
    run = runs / "sm-safe" / f"cv-{r.json()['run_id'][:12]}"
    children = json.loads((run / "run.json").read_text())["children"]
    assert [(c["name"], c["reused"]) for c in children] == [("fold0", True), ("fold1", False)]
    assert children[0]["id"] == fold0.json()["run_id"]
    assert len(_rows(run / "per_fold.csv")) == 2
    assert sorted(r["case"] for r in _rows(run / "per_case.csv")) == [f"synct_{i:03d}" for i in range(8)]
    m = r.json()["metrics"]
    assert m["fold"] == "all" and m["folds"] == 2 and m["over_folds"]["dice_n"] == 2
    assert "Mean over folds" in (run / "paper.md").read_text()


# -- bad input: one line naming the file, the right exit code, nothing complete ---------------------------------
@pytest.fixture
def data(tmp_path):
    from medrun.datasets import get

    return get("msd").make_fixture(tmp_path / "d", 0) / "Task90_SynthMulti"


def _train(cli, runs, data, *extra):
    return cli("train", "sm-safe", "--dataset", "msd", "--data-dir", data, "--runs-dir", runs, *QUICK, *extra)


def test_mask_shape_differs_from_image(cli, runs, data):
    label = data / "labelsTr" / "syn_004.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((32, 30, 32), np.uint8), np.eye(4)), label)
    r = _train(cli, runs, data)
    assert r.code == 3 and str(label) in r.err and "(32, 30, 32)" in r.err and "Traceback" not in r.err
    assert _no_complete_run(runs)


def test_mask_with_values_outside_the_labels(cli, runs, data):
    label = data / "labelsTr" / "syn_005.nii.gz"
    img = nib.load(label)
    arr = np.asarray(img.dataobj).copy()
    arr[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(arr, img.affine), label)
    r = _train(cli, runs, data)
    assert r.code == 3 and str(label) in r.err and "[7]" in r.err and "dataset.json" in r.err
    assert "Traceback" not in r.err and _no_complete_run(runs)
    (run,) = (runs / "sm-safe").glob("train-*")
    assert json.loads((run / "run.json").read_text())["status"] == "failed"


def test_fewer_modalities_than_dataset_json_declares(cli, runs, data):
    image = data / "imagesTr" / "syn_001.nii.gz"
    img = nib.load(image)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[..., 0], img.affine), image)
    r = _train(cli, runs, data)
    assert r.code == 3 and str(image) in r.err and "declares 2 (T2, ADC)" in r.err and "Traceback" not in r.err
    assert _no_complete_run(runs)


def test_empty_training_split_after_filtering(cli, runs, data):
    ids = ",".join(f"syn_{i:03d}" for i in range(8))
    r = _train(cli, runs, data, "-o", f"dataset.exclude=[{ids}]")
    assert r.code == 2 and str(data / "dataset.json") in r.err and "dataset.exclude" in r.err
    assert "Traceback" not in r.err and _no_complete_run(runs)


def test_patch_larger_than_the_volume(cli, runs, data):
    r = _train(cli, runs, data, "-o", "train.patch_size=[40,40,40]")
    assert r.code == 2 and "imagesTr/syn_" in r.err and "-o train.patch_size=[32,32,32]" in r.err
    assert "Traceback" not in r.err and _no_complete_run(runs)


def test_wrong_folder(cli, runs, tmp_path):
    (tmp_path / "empty").mkdir()
    r = _train(cli, runs, tmp_path / "empty")
    assert r.code == 3 and "holds no TaskXX_*/dataset.json" in r.err and not runs.exists()
