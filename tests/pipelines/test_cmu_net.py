"""cmu-net: learning on the fixture, the stages on a finished run (eval, morphology, predict), the ablation as a
manifest list, the loss, and bad input through the CLI."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

# A smaller config than the card's smoke run: 40 iterations instead of 200, so SGD needs lr 0.1 and momentum 0.9
# (nnU-Net's 0.99 momentum only gets going after ~60 steps); F1 ≈ 0.86 on the 2-core machine
SMALL = ["-o", "train.epochs=4", "-o", "train.iters_per_epoch=10", "-o", "train.lr=0.1", "-o", "train.momentum=0.9"]


@pytest.mark.slow
def test_learns_on_fixture_then_eval_morphology_predict(cli, runs):
    r = cli("train", "cmu-net", "--dataset", "sekh-mito", "--fixture", "--runs-dir", runs, *SMALL, "--json")
    assert r.code == 0, r.err
    out = r.json()
    m = out["metrics"]
    assert m["f1"] >= 0.5, m  # chance (predicting foreground everywhere) is F1 ≈ 0.33 at ~20 % foreground
    assert m["train_loss_last"] < 0.7 * m["train_loss_first"], m
    assert m["morph_truth_exact"] == 1.0 and m["morph_gt_dot_n"] == 32 and m["morph_gt_network_n"] == 3
    assert 0 <= m["morph_pred_count_err"] < 1.0, m  # the smoke (200 steps) asks < 0.25 of the model's read-out
    run = runs / "cmu-net" / f"train-{out['run_id'][:12]}"
    for f in ("per_case.csv", "paper.md", "splits_final.json", "checkpoints/model.safetensors",
              "figures/learning_curves.png", "figures/overlay_fixture_ts_000.png", "MANIFEST.sha256"):
        assert (run / f).exists(), f
    paper = (run / "paper.md").read_text()
    assert "Table 2" in paper and "| f1 |" in paper and "0.7883" in paper and "Morphology" in paper
    lock = json.loads((run / "data.lock.json").read_text())
    assert len(lock["splits"]["train"]) == 24 and len(lock["splits"]["test"]) == 8  # labelsTs is the test split
    header = (run / "per_case.csv").read_text().splitlines()[0]
    assert header.startswith("case,f1,dice,iou,iou_bg,miou") and "pred_network_n" in header

    ev = cli("eval", "cmu-net", "--dataset", "sekh-mito", "--fixture", "--runs-dir", runs, *SMALL, "--json")
    assert ev.code == 0, ev.err
    assert ev.json()["metrics"]["f1"] == pytest.approx(m["f1"])  # same weights, same test split

    mo = cli("morphology", "cmu-net", "--dataset", "sekh-mito", "--fixture", "--runs-dir", runs, *SMALL, "--json")
    assert mo.code == 0, mo.err
    mm = mo.json()["metrics"]
    assert mm["morph_gt_rod_n"] == 21 and mm["morph_pred_dot_n"] == m["morph_pred_dot_n"]
    mo_run = runs / "cmu-net" / f"morphology-{mo.json()['run_id'][:12]}"
    assert (mo_run / "figures" / "morphology.png").exists() and (mo_run / "components.csv").exists()

    pr = cli("predict", "cmu-net", "--dataset", "sekh-mito", "--fixture", "--runs-dir", runs, *SMALL, "--json")
    assert pr.code == 0, pr.err
    pr_run = runs / "cmu-net" / f"predict-{pr.json()['run_id'][:12]}"
    mask = np.asarray(Image.open(pr_run / "predictions" / "fixture_ts_000.png"))
    assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 1}


def test_ablation_is_one_manifest_list(cli, runs):
    args = ["--dataset", "sekh-mito", "--fixture", "--runs-dir", runs, "-o", "train.epochs=1",
            "-o", "train.iters_per_epoch=2", "-o", "train.batch_size=2", "-o", "ablate.variants=[unet,cmunet]"]
    r = cli("ablate", "cmu-net", *args, "--json")
    assert r.code == 0, r.err
    m = r.json()["metrics"]
    assert m["variants"] == ["unet", "cmunet"] and {"unet.f1", "cmunet.f1", "cmunet.miou"} <= set(m)
    run = runs / "cmu-net" / f"ablate-{r.json()['run_id'][:12]}"
    table = (run / "ablation.csv").read_text().splitlines()
    assert len(table) == 3 and table[1].startswith("unet,") and table[2].startswith("cmunet,")
    paper = (run / "paper.md").read_text()
    assert "Table 5" in paper and "0.7593" in paper and "0.7883" in paper
    # each variant is a train run of its own (its weights, its per-case rows), reused by a plain train of it
    children = json.loads((run / "run.json").read_text())["children"]
    assert [c["name"] for c in children] == ["unet", "cmunet"]
    assert all((runs.parent / c["run_dir"] / "checkpoints" / "model.safetensors").exists() for c in children)
    assert len((run / "per_case.csv").read_text().splitlines()) == 1 + 2 * 8
    one = cli("train", "cmu-net", *args, "-o", "model.name=unet", "--json")
    assert one.code == 0 and one.json()["reused"] and one.json()["run_id"] == children[0]["id"], one.err
    assert one.json()["metrics"]["f1"] == m["unet.f1"]


def test_loss_is_dice_plus_ce_with_deep_supervision():
    from monai.losses import DiceCELoss

    from medrun.pipelines.cmu_net.pipeline import DeepSupervisionLoss

    torch.manual_seed(0)
    y = (torch.rand(2, 1, 16, 16) > 0.7).long()
    outs = [torch.randn(2, 2, 16, 16), torch.randn(2, 2, 8, 8), torch.randn(2, 2, 4, 4)]
    ref = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, batch=True, smooth_nr=1e-5,
                     smooth_dr=1e-5)
    y8 = torch.nn.functional.interpolate(y.float(), (8, 8), mode="nearest").long()
    want = (ref(outs[0], y) * 1 + ref(outs[1], y8) * 0.5) / 1.5  # lowest resolution dropped, weights normalised
    assert DeepSupervisionLoss()(outs, y).item() == pytest.approx(want.item(), rel=1e-6)
    assert DeepSupervisionLoss()(outs[0], y).item() == pytest.approx(ref(outs[0], y).item(), rel=1e-6)


def test_metrics_and_morphology_helpers():
    from medrun.pipelines.cmu_net.pipeline import morphology, overlap_metrics

    gt = np.zeros((20, 20), np.uint8)
    gt[2:4, 2:4] = 1  # dot, 4 px
    gt[10:20, 0:12] = 1  # rod, 120 px
    pred = gt.copy()
    pred[2:4, 2:4] = 0
    m = overlap_metrics(pred, gt)
    assert m["f1"] == pytest.approx(2 * 120 / (2 * 120 + 4)) and m["iou"] == pytest.approx(120 / 124)
    assert m["miou"] == pytest.approx((120 / 124 + 276 / 280) / 2)
    assert morphology(gt) == {"dot_n": 1, "dot_area": 4, "rod_n": 1, "rod_area": 120, "network_n": 0, "network_area": 0}
    diag = np.eye(5, dtype=np.uint8)  # one component under 8-connectivity, five under 4
    assert morphology(diag)["dot_n"] == 1


def test_model_switch_builds_monai_baselines():
    from medrun.pipelines.cmu_net.config import Model
    from medrun.pipelines.cmu_net.pipeline import build_network

    for name in ("segresnet", "unetr", "swinunetr"):
        net = build_network(Model(name=name), 64).eval()
        with torch.no_grad():
            assert net(torch.randn(1, 1, 64, 64)).shape == (1, 2, 64, 64), name


# -- bad input --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def _pristine(tmp_path_factory):
    from medrun.datasets import get

    return get("sekh-mito").make_fixture(tmp_path_factory.mktemp("cmu"), 0)


@pytest.fixture
def data(_pristine, tmp_path):
    import shutil

    return shutil.copytree(_pristine, tmp_path / "d" / _pristine.name)


def _train(cli, runs, root, *extra):
    return cli("train", "cmu-net", "--dataset", "sekh-mito", "--data-dir", root, "--runs-dir", runs,
               "-o", "train.epochs=1", "-o", "train.iters_per_epoch=1", "-o", "train.patch_size=64",
               "-o", "model.channels=[8,16]", "-o", "model.d_state=2", *extra)


def _nothing_complete(runs):
    for run in (runs / "cmu-net").iterdir():
        assert not (run / "MANIFEST.sha256").exists()
        assert json.loads((run / "run.json").read_text())["status"] == "failed"


def test_label_of_other_shape_is_a_data_error(cli, runs, data):
    bad = data / "labelsTr" / "fixture_tr_005.png"
    Image.fromarray(np.zeros((60, 64), np.uint8)).save(bad)
    r = _train(cli, runs, data)
    assert r.code == 3 and "fixture_tr_005.png is 64×60" in r.err and "Traceback" not in r.err
    _nothing_complete(runs)


def test_label_values_outside_the_layouts_labels(cli, runs, data):
    bad = data / "labelsTs" / "fixture_ts_001.png"
    arr = np.asarray(Image.open(bad)) * 255
    Image.fromarray(arr.astype(np.uint8)).save(bad)
    r = _train(cli, runs, data)
    assert r.code == 3 and "fixture_ts_001.png has values 255" in r.err and "import-pairs" in r.err
    assert "Traceback" not in r.err
    _nothing_complete(runs)


def test_empty_training_split_after_filtering(cli, runs, data):
    r = _train(cli, runs, data, "-o", "dataset.cases=^no_such_case")
    assert r.code == 2 and "imagesTr" in r.err and "empty after filtering" in r.err and "dataset.cases" in r.err
    assert "Traceback" not in r.err
    _nothing_complete(runs)


def test_wrong_folder_fails_before_a_run_exists(cli, runs, data):
    r = _train(cli, runs, data.parent)
    assert r.code == 3 and "Dataset001_Fixture instead" in r.err
    assert not runs.exists()


def test_patch_size_must_fit_the_poolings(cli, runs):
    r = cli("train", "cmu-net", "--dataset", "sekh-mito", "--fixture", "--runs-dir", runs, "-o", "train.patch_size=36")
    assert r.code == 2 and "multiple of 8" in r.err and not runs.exists()


@pytest.mark.slow
def test_monai_bundle_predicts_the_masks_medrun_predicts(cli, runs, tmp_path):
    """`medrun export`: MONAI's runner reads the images with medrun's reader, z-scores them and runs the same
    sliding-window inference: the masks are predict's, at each image's size."""
    import shutil
    import subprocess
    import sys

    args = ["--dataset", "sekh-mito", "--fixture", "--runs-dir", runs, "-o", "train.epochs=1",
            "-o", "train.iters_per_epoch=2", "-o", "train.batch_size=2"]
    r = cli("train", "cmu-net", *args, "--json")
    assert r.code == 0, r.err
    bundle, images, out = tmp_path / "bundle", tmp_path / "images", tmp_path / "out"
    assert cli("export", r.json()["run_dir"], "--out", bundle, "--runs-dir", runs).code == 0
    images.mkdir()
    lock = json.loads((runs / "cmu-net" / f"train-{r.json()['run_id'][:12]}" / "data.lock.json").read_text())
    for rel in lock["splits"]["test"][:2]:
        shutil.copy(f"{lock['trees']['data']['root']}/{rel}", images)
    proc = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file",
                           bundle / "configs" / "inference.yaml", "--meta_file", bundle / "configs" / "metadata.json",
                           "--bundle_root", bundle, "--input_dir", images, "--output_dir", out],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    theirs = json.loads((out / "predictions.json").read_text())
    p = cli("predict", "cmu-net", *args, "-o", f"predict.input={images}", "--json")
    assert p.code == 0, p.err
    assert len(theirs) == 2
    for name, v in theirs.items():
        ours = np.asarray(Image.open(f"{p.json()['run_dir']}/predictions/{name.replace('_0000.png', '.png')}"))
        assert np.array_equal(ours, np.array(v["mask"], np.uint8)), name
