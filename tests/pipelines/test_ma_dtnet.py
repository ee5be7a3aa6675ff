"""ma-dtnet: learning on the BUSI fixture, eval / predict on the trained run, the ablation table, the loss, and
bad input (mask size, mask values, an empty training split) through the CLI."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from medrun.datasets import get


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The machine is shared: one intra-op thread avoids oversubscription stalls (same result, steadier time)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def busi_root(tmp_path):
    return get("busi").make_fixture(tmp_path / "data", 0)


# A small config that still learns both tasks: the small U-Net with C-SMA skips and a CA classifier (Table 4's
# ES-MTL+C-SMA+CA) at 64², 2 folds, on the BUSI fixture.
_FAST = ["-o", "model.encoder=unet", "-o", "train.epochs=12"]


@pytest.mark.slow
def test_learns_on_fixture_then_eval_predict(cli, runs):
    r = cli("train", "ma-dtnet", "--dataset", "busi", "--fixture", "--runs-dir", runs, *_FAST, "--json")
    assert r.code == 0, r.err
    out = r.json()
    m = out["metrics"]
    assert m["dice"] > 0.5 and m["auroc"] > 0.6, m  # chance: Dice of an all-lesion guess ≈ 0.2, AUROC 0.5
    assert m["train_loss_last"] < m["train_loss_first"]
    run = runs / "ma-dtnet" / f"train-{out['run_id'][:12]}"
    for f in ("per_case.csv", "paper.md", "checkpoints/model.safetensors", "figures/learning_curves.png",
              "MANIFEST.sha256"):
        assert (run / f).exists(), f
    assert len(list((run / "figures" / "overlays").glob("*.png"))) == 4
    header = (run / "per_case.csv").read_text().splitlines()[0].split(",")
    assert header[:8] == ["case", "label", "dice", "iou", "recall", "specificity", "precision", "hd95"]
    assert "Table 2" in (run / "paper.md").read_text()
    lock = json.loads((run / "data.lock.json").read_text())
    assert sorted(len(v) for v in lock["splits"].values()) == [0, 12, 12]

    ev = cli("eval", "ma-dtnet", "--dataset", "busi", "--fixture", "--runs-dir", runs, *_FAST, "--json")
    assert ev.code == 0, ev.err
    assert math.isclose(ev.json()["metrics"]["dice"], m["dice"], rel_tol=1e-6)

    pred = cli("predict", "ma-dtnet", "--dataset", "busi", "--fixture", "--runs-dir", runs, *_FAST, "--json")
    assert pred.code == 0 and pred.json()["metrics"]["n"] == 12
    pred_run = runs / "ma-dtnet" / f"predict-{pred.json()['run_id'][:12]}"
    masks = list((pred_run / "predictions").glob("*_mask.png"))
    assert len(masks) == 12 and Image.open(masks[0]).size == (64, 64)


@pytest.mark.slow
def test_ablate_writes_one_table(cli, runs, tmp_path):
    from medrun.manifests import manifest_path

    manifest = tmp_path / "ablate.yaml"
    manifest.write_text(f"extends: {manifest_path('ma-dtnet', 'busi', fixture=True)}\n"
                        "train: {epochs: 1}\n"
                        "dataset: {img_size: 32}\n"
                        "ablate: {run: [unet, unet-csma, es-mtl-csma-ca], compare: [unet-csma, unet]}\n")
    r = cli("ablate", "ma-dtnet", "--manifest", manifest, "--fixture", "--runs-dir", runs, "--json")
    assert r.code == 0, r.err
    m = r.json()["metrics"]
    assert m["variants"] == 3 and m["unet/params"] == 1_815_265 and m["unet-csma/params"] == 1_835_361
    assert "es-mtl-csma-ca/auroc" in m and "unet/auroc" not in m
    run = runs / "ma-dtnet" / f"ablate-{r.json()['run_id'][:12]}"
    rows = (run / "ablation.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[1].startswith("unet,")
    cases = (run / "per_case.csv").read_text().splitlines()
    assert len(cases) == 1 + 3 * 12 and "prob_malignant" in cases[0]  # seg-only and multi-task rows in one CSV
    paper = (run / "paper.md").read_text()
    assert "unet-csma" in paper and "74.79" in paper and "Wilcoxon" in paper  # BUSI Table 3 UNet Dice
    assert (run / "checkpoints" / "unet-csma-fold1.safetensors").exists()


def test_bad_variant_is_a_manifest_error(cli, runs):
    r = cli("ablate", "ma-dtnet", "--dataset", "busi", "--fixture", "--runs-dir", runs, "--dry-run",
            "-o", "ablate.variants.bad={model.skip_attention: transformer}")
    assert r.code == 2 and "variant 'bad'" in r.err and "Traceback" not in r.err


def _assert_failed(runs, err):
    assert "Traceback" not in err
    (run,) = (runs / "ma-dtnet").iterdir()
    assert not (run / "MANIFEST.sha256").exists()
    assert json.loads((run / "run.json").read_text())["status"] == "failed"


def test_mask_of_other_size_fails_cleanly(cli, runs, busi_root):
    bad = busi_root / "malignant" / "malignant (4)_mask.png"
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(bad)
    r = cli("train", "ma-dtnet", "--dataset", "busi", "--data-dir", busi_root, "--runs-dir", runs,
            "-o", "dataset.img_size=64", "-o", "cv.folds=2")
    assert r.code == 3 and "malignant (4)_mask.png is 50×40" in r.err and "size" in r.err
    _assert_failed(runs, r.err)


def test_mask_with_other_values_fails_cleanly(cli, runs, busi_root):
    bad = busi_root / "benign" / "benign (2)_mask.png"
    arr = np.asarray(Image.open(bad)).copy()
    arr[arr > 0] = 128
    Image.fromarray(arr).save(bad)
    r = cli("train", "ma-dtnet", "--dataset", "busi", "--data-dir", busi_root, "--runs-dir", runs,
            "-o", "dataset.img_size=64", "-o", "cv.folds=2")
    assert r.code == 3 and "benign (2)_mask.png has values other than 0 and 255" in r.err
    _assert_failed(runs, r.err)


def test_empty_training_split_after_filtering(cli, runs, busi_root):
    keep = "benign (1)"
    others = [p.stem for c in ("benign", "malignant") for p in (busi_root / c).glob("*).png") if p.stem != keep]
    r = cli("train", "ma-dtnet", "--dataset", "busi", "--data-dir", busi_root, "--runs-dir", runs,
            "-o", "dataset.img_size=64", "-o", "cv.folds=2", "-o", f"dataset.exclude={json.dumps(others)}")
    assert r.code == 3 and "empty training split" in r.err and str(busi_root) in r.err and "dataset.exclude" in r.err
    _assert_failed(runs, r.err)


def test_wrong_folder_fails_before_a_run(cli, runs, busi_root):
    r = cli("train", "ma-dtnet", "--dataset", "udiat", "--data-dir", busi_root, "--runs-dir", runs)
    assert r.code == 3 and "does not have the UDIAT layout" in r.err and not runs.exists()


def test_loss_is_eq_10():
    from medrun.models.madtnet import DualTaskNet
    from medrun.pipelines.ma_dtnet.pipeline import LitDualTask

    torch.manual_seed(0)
    net = DualTaskNet("unet", unet_features=(4, 4, 8, 8, 8, 4))
    lit = LitDualTask(net, lr=1e-3, lam=0.8)
    x, y, label = torch.rand(2, 3, 32, 32), (torch.rand(2, 1, 32, 32) > 0.5).float(), torch.tensor([0.0, 1.0])
    total, parts, _, _ = lit.loss(x, y, label)
    assert torch.isclose(total, 0.8 * parts["seg"] + 0.2 * parts["cls"])
    net.eval()
    seg_logits, cls_logit = net(x)
    from monai.losses import DiceLoss

    expected_seg = DiceLoss(sigmoid=True)(seg_logits, y) + torch.nn.functional.binary_cross_entropy_with_logits(seg_logits, y)
    lit.net.eval()
    _, parts, _, _ = lit.loss(x, y, label)
    assert torch.isclose(parts["seg"], expected_seg, atol=1e-6)


@pytest.mark.slow
def test_cv_reports_mean_and_sd_over_folds(cli, runs):
    r = cli("cv", "ma-dtnet", "--dataset", "udiat", "--fixture", "--runs-dir", runs, "-o", "model.encoder=unet",
            "-o", "train.epochs=1", "-o", "dataset.img_size=32", "--json")
    assert r.code == 0, r.err
    m = r.json()["metrics"]
    assert m["folds"] == 2 and {"dice", "dice_sd", "auroc", "auroc_sd", "hd95"} <= set(m)
    run = runs / "ma-dtnet" / f"cv-{r.json()['run_id'][:12]}"
    assert len((run / "per_fold.csv").read_text().splitlines()) == 3
    assert len((run / "per_case.csv").read_text().splitlines()) == 25  # every image held out once
    assert "Mean ± sd over folds" in (run / "paper.md").read_text() and "Table 1" in (run / "paper.md").read_text()


def test_augmentation_keeps_masks_binary_and_is_seeded():
    from medrun.pipelines.ma_dtnet.pipeline import SegSet

    rng = np.random.default_rng(0)
    images = rng.random((3, 32, 32)).astype(np.float32)
    masks = np.zeros((3, 32, 32), np.uint8)
    masks[:, 8:20, 10:24] = 1
    labels = np.array([0, 1, 0])

    def draw(seed):
        ds = SegSet(images, masks, labels, augment=True, degrees=15, seed=seed)
        return [ds[i % 3] for i in range(12)]

    a, b = draw(3), draw(3)
    for (x, y, lab), (x2, y2, _) in zip(a, b, strict=True):
        assert x.shape == (3, 32, 32) and y.shape == (1, 32, 32) and lab.item() in (0.0, 1.0)
        assert set(torch.unique(y).tolist()) <= {0.0, 1.0}  # nearest interpolation for the mask
        assert torch.equal(x, x2) and torch.equal(y, y2)  # same seed, same draws
    plain = SegSet(images, masks, labels)[0][1]
    assert any(not torch.equal(y, plain) for _, y, _ in a[::3])  # something was flipped or rotated
