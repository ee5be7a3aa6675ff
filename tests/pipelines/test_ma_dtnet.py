"""ma-dtnet: learning on the BUSI fixture, eval / predict on the trained run, the ablation table, the loss, and
bad input (mask size, mask values, an empty training split) through the CLI."""

import csv
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
    children = {c["name"]: c for c in json.loads((run / "run.json").read_text())["children"]}
    assert list(children) == ["unet-fold1", "unet-csma-fold1", "es-mtl-csma-ca-fold1"]
    assert (runs.parent / children["unet-csma-fold1"]["run_dir"] / "checkpoints" / "model.safetensors").exists()
    # a variant-fold is an ordinary train run: `-o model.variant=…` finds it complete, an eval finds it too
    one = cli("train", "ma-dtnet", "--manifest", manifest, "--fixture", "--runs-dir", runs,
              "-o", "model.variant=unet-csma", "--json")
    assert one.code == 0 and one.json()["reused"] and one.json()["run_id"] == children["unet-csma-fold1"]["id"], one.err
    assert one.json()["metrics"]["params_total"] == 1_835_361
    ev = cli("eval", "ma-dtnet", "--manifest", manifest, "--fixture", "--runs-dir", runs, "-o", "model.variant=unet",
             "--json")
    assert ev.code == 0 and ev.json()["metrics"]["dice"] == m["unet/dice"], ev.err  # one fold: the variant's Dice


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
            "-o", "dataset.img_size=64", "-o", "dataset.folds=2")
    assert r.code == 3 and "malignant (4)_mask.png is 50×40" in r.err and "size" in r.err
    _assert_failed(runs, r.err)


def test_mask_with_other_values_fails_cleanly(cli, runs, busi_root):
    bad = busi_root / "benign" / "benign (2)_mask.png"
    arr = np.asarray(Image.open(bad)).copy()
    arr[arr > 0] = 128
    Image.fromarray(arr).save(bad)
    r = cli("train", "ma-dtnet", "--dataset", "busi", "--data-dir", busi_root, "--runs-dir", runs,
            "-o", "dataset.img_size=64", "-o", "dataset.folds=2")
    assert r.code == 3 and "benign (2)_mask.png has values other than 0 and 255" in r.err
    _assert_failed(runs, r.err)


def test_empty_training_split_after_filtering(cli, runs, busi_root):
    keep = "benign (1)"
    others = [p.stem for c in ("benign", "malignant") for p in (busi_root / c).glob("*).png") if p.stem != keep]
    r = cli("train", "ma-dtnet", "--dataset", "busi", "--data-dir", busi_root, "--runs-dir", runs,
            "-o", "dataset.img_size=64", "-o", "dataset.folds=2", "-o", f"dataset.exclude={json.dumps(others)}")
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

    bce = torch.nn.functional.binary_cross_entropy_with_logits(seg_logits, y)
    expected_seg = DiceLoss(sigmoid=True)(seg_logits, y) + bce
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
    assert m["dice_n"] == 2 and len(m["dice_ci95"]) == 2
    # each fold is a train run of its own, reused by a plain train of that fold (and by the next cv)
    children = json.loads((run / "run.json").read_text())["children"]
    assert [c["name"] for c in children] == ["fold1", "fold2"]
    one = cli("train", "ma-dtnet", "--dataset", "udiat", "--fixture", "--runs-dir", runs, "-o", "model.encoder=unet",
              "-o", "train.epochs=1", "-o", "dataset.img_size=32", "-o", "dataset.fold=2", "--json")
    assert one.code == 0 and one.json()["reused"] and one.json()["run_id"] == children[1]["id"], one.err


@pytest.mark.slow
def test_best_validation_epoch_is_kept_through_model_checkpoint(cli, runs):
    r = cli("train", "ma-dtnet", "--dataset", "busi", "--fixture", "--runs-dir", runs, "-o", "model.encoder=unet",
            "-o", "dataset.img_size=32", "-o", "train.epochs=3", "-o", "dataset.val_fraction=0.25",
            "-o", "train.select=best_val", "--json")
    assert r.code == 0, r.err
    m = r.json()["metrics"]
    run = runs / "ma-dtnet" / f"train-{r.json()['run_id'][:12]}"
    best = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert 1 <= m["best_epoch"] <= 3 and best["epoch"] + 1 == m["best_epoch"]
    from safetensors.torch import load_file

    kept = load_file(str(run / "checkpoints" / "model.safetensors"))
    assert all(torch.equal(kept[k], best["state_dict"][f"net.{k}"]) for k in kept)  # the run's weights: the best's
    with open(run / "logs" / "metrics.csv") as f:
        scores = [float(row["val_score"]) for row in csv.DictReader(f) if row.get("val_score")]
    assert len(scores) == 3 and scores.index(max(scores)) + 1 == m["best_epoch"]


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


@pytest.mark.slow
def test_monai_bundle_predicts_what_medrun_predicts(cli, runs, tmp_path, busi_root):
    """`medrun export`: MONAI's runner gives predict's p(malignant) and, upsampled to the image, its mask."""
    import shutil
    import subprocess
    import sys

    args = ["--dataset", "busi", "--fixture", "--runs-dir", runs, "-o", "model.encoder=unet",
            "-o", "dataset.img_size=32", "-o", "train.epochs=1"]
    r = cli("train", "ma-dtnet", *args, "--json")
    assert r.code == 0, r.err
    bundle, images, out = tmp_path / "bundle", tmp_path / "images", tmp_path / "out"
    assert cli("export", r.json()["run_dir"], "--out", bundle, "--runs-dir", runs).code == 0
    images.mkdir()
    for name in ("benign (1)", "malignant (2)"):  # 64² images: the bundle's 32² mask is predict's, halved
        shutil.copy(busi_root / name.split(" ")[0] / f"{name}.png", images / f"{name.replace(' ', '_')}.png")
    proc = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file",
                           bundle / "configs" / "inference.yaml", "--meta_file", bundle / "configs" / "metadata.json",
                           "--bundle_root", bundle, "--input_dir", images, "--output_dir", out],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    theirs = json.loads((out / "predictions.json").read_text())
    p = cli("predict", "ma-dtnet", *args, "-o", f"predict.input={images}", "--json")
    assert p.code == 0 and len(theirs) == 2, p.err
    with open(f"{p.json()['run_dir']}/per_case.csv") as f:
        ours = {row["file"].rsplit("/", 1)[-1]: row for row in csv.DictReader(f)}
    for name, v in theirs.items():
        assert abs(float(ours[name]["prob_malignant"]) - v["prob_malignant"]) < 2e-6, name
        mask = np.asarray(Image.open(f"{p.json()['run_dir']}/{ours[name]['mask']}")) > 0
        assert np.array_equal(mask, np.kron(np.array(v["mask"], np.uint8), np.ones((2, 2), np.uint8)) > 0), name


def test_table3_parameter_counts_against_the_paper():
    """Table 3 sizes: U-Net, +CBAM and +MHSA at the paper's 0.01 M; CA / SMA / C-SMA at the sums the notes give
    (the paper's 1.95 / 1.98 / 1.99 M fit no single reading of the blocks; models/madtnet.py)."""
    import yaml

    from medrun.models.madtnet import DualTaskNet
    from medrun.pipelines.ma_dtnet import __file__ as pkg

    rows = yaml.safe_load((__import__("pathlib").Path(pkg).parent / "paper.yaml").read_text())
    paper = {r[0]: r[1] for r in rows["tables"]["ablation_busi"]["rows"]}
    with torch.device("meta"):
        count = {a: sum(p.numel() for p in DualTaskNet("unet", skip_attention=a, cls_head="none").parameters())
                 for a in ("none", "cbam", "mhsa", "ca", "sma", "csma")}
    for a in ("none", "cbam", "mhsa"):
        theirs = paper["unet" if a == "none" else f"unet-{a}"]
        assert abs(count[a] / 1e6 - theirs) < 0.006, (a, count[a], theirs)  # 1,815,265 is printed as 1.81 M
    chans = (16, 32, 64, 128)
    ca, sma = sum(c * c // 8 for c in chans), sum(72 * c + 24 for c in chans)
    assert (count["ca"] - count["none"], count["sma"] - count["none"], count["csma"] - count["none"]) == (
        ca, sma, ca + sma) == (2_720, 17_376, 20_096)
    # MHSA: a ViT block (12C² + 13C) and a 256²-input positional embedding on x2, x3, x4
    assert count["mhsa"] - count["none"] == sum(12 * c * c + 13 * c + (256 >> k) ** 2 * c
                                                for k, c in ((2, 64), (3, 128), (4, 256)))


# -- GlaS and HAM10000 (Table 6) --------------------------------------------------------------------------------
def test_glas_reader_official_layout_and_quirks(tmp_path):
    from medrun.datasets import glas
    from medrun.errors import DataError

    root = get("glas").make_fixture(tmp_path / "data", 0)
    cases = glas.read(root)
    parts = [glas.part_of(c.id) for c in cases]
    assert (parts.count("train"), parts.count("testA"), parts.count("testB")) == (16, 8, 4)
    assert [c.id for c in cases[:3]] == ["train_1", "train_2", "train_3"] and cases[1].label == 1  # spaced Grade.csv
    image, truth = glas.load(cases[0], 32, instances=True)
    assert image.shape == (32, 32, 3) and 2 not in set(np.unique(truth).tolist())  # labels 1, 3, 4…: a gap kept
    (root / "testB_4_anno.bmp").unlink()
    with pytest.raises(DataError, match="testB_4_anno.bmp"):
        glas.read(root)
    with pytest.raises(DataError, match="one level above"):
        glas.check_layout(root.parent)


def test_ham10000_reader_dataverse_layout(tmp_path):
    from medrun.datasets import ham10000
    from medrun.errors import DataError

    root = get("ham10000").make_fixture(tmp_path / "data", 0)
    cases = ham10000.read(root)
    assert len(cases) == 28 and sorted({c.label for c in cases}) == list(range(7))
    assert {c.image.parent.name for c in cases} == {"HAM10000_images_part_1", "HAM10000_images_part_2"}
    assert sum(c.lesion == "HAM_0000000" for c in cases) == 2  # two images of one lesion
    image, mask = ham10000.load(cases[0], 32)
    assert image.shape == (32, 32, 3) and set(np.unique(mask).tolist()) == {0, 1}
    meta = root / "HAM10000_metadata.csv"  # Dataverse's tab-separated .tab reads the same
    meta.with_suffix(".tab").write_text(meta.read_text().replace(",", "\t"))
    meta.unlink()
    assert [c.id for c in ham10000.read(root)] == [c.id for c in cases]
    (root / ham10000.MASKS / f"{cases[3].id}_segmentation.png").unlink()
    with pytest.raises(DataError, match=f"{cases[3].id}_segmentation.png"):
        ham10000.read(root)


def test_glas_train_scores_object_metrics_per_test_part(cli, runs, tmp_path):
    """Wiring, not learning (the smoke run learns): one epoch of the small U-Net at 32² on the GlaS fixture writes
    object Dice / Hausdorff for Test A, Test B and both, per image and beside Table 6; predict on the GlaS folder
    skips the annotations."""
    fast = ["-o", "model.encoder=unet", "-o", "train.epochs=1", "-o", "dataset.img_size=32", "-o", "eval.overlays=1"]
    r = cli("train", "ma-dtnet", "--dataset", "glas", "--fixture", "--runs-dir", runs, *fast, "--json")
    assert r.code == 0, r.err
    m = r.json()["metrics"]
    for key in ("object_dice", "object_dice_testA", "object_dice_testB", "object_hausdorff_testA_nonfinite_cases"):
        assert key in m, key
    assert 0 <= m["object_dice_testA"] <= 1 and m["n_cases"] == 12
    run = runs / "ma-dtnet" / f"train-{r.json()['run_id'][:12]}"
    header = (run / "per_case.csv").read_text().splitlines()[0].split(",")
    assert {"part", "object_dice", "object_hausdorff"} <= set(header)
    assert "Table 6" in (run / "paper.md").read_text()
    folder = get("glas").make_fixture(tmp_path / "scans", 1)
    pred = cli("predict", "ma-dtnet", "--dataset", "glas", "--fixture", "--runs-dir", runs, *fast,
               "-o", f"predict.input={folder}", "--json")
    assert pred.code == 0 and pred.json()["metrics"]["n"] == 28, pred.err  # 28 tiles, no *_anno.bmp
    cv = cli("cv", "ma-dtnet", "--dataset", "glas", "--fixture", "--runs-dir", runs)
    assert cv.code == 2 and "official split" in cv.err
