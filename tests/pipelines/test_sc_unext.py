"""sc-unext: the architecture at full size, the joint loss against references, learning on the fixture, eval /
predict on the train run, the ablation and complexity stages, and bad input through the CLI."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from medrun.pipelines.sc_unext import pipeline as P


@pytest.fixture(autouse=True)
def _one_thread():
    """Two cores shared with other jobs: one intra-op thread is many times faster than two spinning ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _manifest(dataset="isic2018", fixture=False, **over):
    from medrun.pipelines import get
    from medrun.pipelines.runner import Request, load_manifest

    m, _ = load_manifest(Request(pipeline="sc-unext", stage="train", dataset=dataset, fixture=fixture,
                                 overrides=[f"{k}={v}" for k, v in over.items()]), get("sc-unext"))
    return m


def n_params(net):
    return sum(p.numel() for p in net.parameters())


def test_parameter_counts_match_card():
    m = _manifest()
    assert n_params(P.build_net(m.model)) == 261_817  # SC-UNeXt: UNeXt-small + 3,112 + 1,440 + 3,704
    base = m.model.model_copy(update={"cbam": False, "sc_skip": False, "pfm": False})
    assert n_params(P.build_net(base)) == 253_561  # UNeXt-small = 247.62 K in 1024-units
    assert round(n_params(P.build_net(base.model_copy(update={"size": "paper"}))) / 1e6, 2) == 1.47
    assert n_params(P.build_net(base.model_copy(update={"arch": "unet"}))) == 7_904_513
    assert P.build_net(m.model)(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 64, 64)


def test_ablation_variants_of_the_manifest_change_params_as_the_card_says():
    from medrun.pipelines.sc_unext.config import apply_variant

    m = _manifest()
    counts = {name: n_params(P.build_net(apply_variant(m, ov)[0])) for name, ov in m.ablate.variants.items()}
    assert counts["unext"] == counts["edge"] == 253_561
    assert counts["skip"] == 253_561 + 3_112 + 1_440 and counts["fuse"] == 253_561 + 3_704
    assert counts["all"] == counts["skip+fuse"] == 261_817
    assert {n: apply_variant(m, ov)[1].edge for n, ov in m.ablate.variants.items()} == {
        "unext": 0, "edge": 1, "skip": 0, "fuse": 0, "edge+skip": 1, "edge+fuse": 1, "skip+fuse": 0, "all": 1}


def test_joint_loss_equals_reference():
    from monai.losses import DiceLoss
    from scipy import ndimage

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 1, 12, 10, generator=g) * 2
    target = (torch.rand(3, 1, 12, 10, generator=g) > 0.6).float()
    total, parts = P.joint_loss(logits, target, bce=0.5, dice=1.0, edge=1.0, smooth=1e-5)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    dice = DiceLoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5, batch=False)(logits, target)
    p = torch.sigmoid(logits).numpy()

    def grad(a):  # 3×3 morphological gradient per image, border ignored (= replicate for max/min)
        return np.stack([ndimage.grey_dilation(x, size=(1, 3, 3), mode="nearest")
                         - ndimage.grey_erosion(x, size=(1, 3, 3), mode="nearest") for x in a])

    ep, et = grad(p), grad(target.numpy())
    edge = -(et * np.log(ep.clip(1e-12)) + (1 - et) * np.log((1 - ep).clip(1e-12))).mean()
    assert parts["dice"].item() == pytest.approx(dice.item(), abs=1e-6)
    assert parts["edge"].item() == pytest.approx(edge, rel=1e-5)
    assert total.item() == pytest.approx(0.5 * bce.item() + dice.item() + edge, rel=1e-5)
    no_edge, parts0 = P.joint_loss(logits, target, edge=0)
    assert "edge" not in parts0 and no_edge.item() == pytest.approx(0.5 * bce.item() + dice.item(), rel=1e-6)


def test_unext_batch_metric_pools_counts_per_batch():
    pred = np.zeros((3, 4, 4), bool)
    gt = np.zeros((3, 4, 4), bool)
    pred[0, :2], gt[0, :1] = True, True  # IoU 4/8
    pred[1, :1], gt[1, :1] = True, True  # IoU 1
    pred[2, :1], gt[2, 1:2] = True, True  # IoU 0
    dice, iou = P.batch_pooled(pred, gt, batch_size=2, smooth=0)
    first = 8 / 12  # batch 1 pooled: intersection 8, union 12
    assert iou == pytest.approx((2 * first + 0) / 3)
    assert dice == pytest.approx((2 * (2 * first / (first + 1)) + 0) / 3)


@pytest.mark.slow
def test_learns_on_fixture_then_eval_predict_and_reuse(cli, runs):
    """The card's smoke run (isic2018 fixture, 64², 5 epochs): validation Dice > 0.7 (all-foreground ≈ 0.27)."""
    r = cli("train", "sc-unext", "--dataset", "isic2018", "--fixture", "--runs-dir", runs, "--json")
    assert r.code == 0, r.err
    out = r.json()
    m = out["metrics"]
    assert m["dice"] > 0.7 and m["iou"] > 0.55 and m["dice_all_foreground"] < 0.35, m
    assert m["params_total"] == 261_817 and m["split"] == "val" and m["n_cases"] == 5
    run = runs / "sc-unext" / f"train-{out['run_id'][:12]}"
    for f in ("per_case.csv", "paper.md", "checkpoints/model.safetensors", "figures/learning_curves.png",
              "logs/metrics.csv", "MANIFEST.sha256"):
        assert (run / f).exists(), f
    assert len(list((run / "figures").glob("overlay_*.png"))) == 4
    assert {len(v) for v in json.loads((run / "data.lock.json").read_text())["splits"].values()} == {19, 5}
    paper = (run / "paper.md").read_text()
    assert "| dice | " in paper and "0.8712" in paper and "Table 1" in paper and "261,817" in paper

    assert cli("train", "sc-unext", "--dataset", "isic2018", "--fixture", "--runs-dir", runs, "--json").json()["reused"]
    ev = cli("eval", "sc-unext", "--dataset", "isic2018", "--fixture", "--runs-dir", runs, "--json")
    assert ev.code == 0, ev.err
    assert ev.json()["metrics"]["dice"] == m["dice"]

    pred = cli("predict", "sc-unext", "--dataset", "isic2018", "--fixture", "--runs-dir", runs, "--json")
    assert pred.code == 0, pred.err
    pred_run = runs / "sc-unext" / f"predict-{pred.json()['run_id'][:12]}"
    masks = sorted((pred_run / "predictions").glob("*_segmentation.png"))
    assert len(masks) == 5 and set(np.unique(np.asarray(Image.open(masks[0])))) <= {0, 255}

    folder = run.parent / "new-images"  # a folder of images of another size: masks come back at that size
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.full((40, 50, 3), 200, np.uint8)).save(folder / f"x{i}.png")
    new = cli("predict", "sc-unext", "--dataset", "isic2018", "--fixture", "--runs-dir", runs, "-o",
              f"predict.input={folder}", "--json")
    assert new.code == 0 and new.json()["metrics"]["n"] == 2, new.err
    out_mask = runs / "sc-unext" / f"predict-{new.json()['run_id'][:12]}" / "predictions" / "x0_segmentation.png"
    assert Image.open(out_mask).size == (50, 40)


@pytest.mark.slow
def test_learns_lungs_on_montgomery_fixture(cli, runs):
    """The CXR stand-in (left ∪ right lung masks, grayscale repeated to 3 channels), the smoke run: Dice > 0.7."""
    r = cli("train", "sc-unext", "--dataset", "montgomery", "--fixture", "--runs-dir", runs,
            "-o", "eval.overlays=0", "--json")
    assert r.code == 0, r.err
    m = r.json()["metrics"]
    assert m["dice"] > 0.7 and m["dice"] > m["dice_all_foreground"] + 0.3, m


@pytest.mark.slow
def test_ablate_writes_one_table_against_table2(cli, runs):
    variants = "{unext: {model.cbam: false, model.sc_skip: false, model.pfm: false, loss.edge: 0}, all: {}}"
    args = ["--dataset", "isic2018", "--fixture", "--runs-dir", runs, "-o", "ablate.epochs=1",
            "-o", f"ablate.variants={variants}", "-o", "dataset.include=['ISIC_000000*']"]
    r = cli("ablate", "sc-unext", *args, "--json")
    assert r.code == 0, r.err
    out = r.json()["metrics"]
    assert out["folds"] == 2 and out["n_cases"] == 10 and set(out["variants"]) == {"unext", "all"}
    assert out["variants"]["unext"]["params"] == 253_561 and out["variants"]["all"]["params"] == 261_817
    run = runs / "sc-unext" / f"ablate-{r.json()['run_id'][:12]}"
    rows = (run / "ablation.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("variant,params,dice_mean_pct")
    assert len((run / "per_fold.csv").read_text().splitlines()) == 1 + 2 * 2
    paper = (run / "paper.md").read_text()
    assert "Table 2" in paper and "| unext | 253561 |" in paper and "85.89" in paper and "87.29" in paper
    # every variant-fold is a train run of its own, validated on its held-out fold, with its own weights
    children = json.loads((run / "run.json").read_text())["children"]
    assert [c["name"] for c in children] == ["unext-fold1", "unext-fold2", "all-fold1", "all-fold2"]
    locks = [json.loads((runs.parent / c["run_dir"] / "data.lock.json").read_text())["splits"] for c in children]
    assert sorted(locks[0]["val"] + locks[1]["val"]) == sorted(locks[0]["train"] + locks[0]["val"])  # 2 folds
    assert locks[0] == locks[2] and all((runs.parent / c["run_dir"] / "checkpoints" / "model.safetensors").exists()
                                        for c in children)
    # a child is an ordinary train run: the same command with its overrides finds it complete
    again = cli("train", "sc-unext", *args, "-o", "model.cbam=false", "-o", "model.sc_skip=false",
                "-o", "model.pfm=false", "-o", "loss.edge=0", "-o", "train.epochs=1", "-o", "dataset.fold=1", "--json")
    assert again.code == 0 and again.json()["reused"] and again.json()["run_id"] == children[1]["id"], again.err


@pytest.mark.slow
def test_repeat_trains_once_per_split_seed_and_reuses_its_train_runs(cli, runs):
    args = ["--dataset", "isic2018", "--fixture", "--runs-dir", runs, "-o", "train.epochs=1",
            "-o", "repeat.split_seeds=[1, 2]", "-o", "dataset.limit=10", "-o", "eval.overlays=0"]
    r = cli("repeat", "sc-unext", *args, "--json")
    assert r.code == 0, r.err
    m = r.json()["metrics"]
    assert m["repeats"] == 2 and 0 <= m["dice"] <= 1 and m["dice_var"] >= 0 and len(m["dice_ci95"]) == 2
    run = runs / "sc-unext" / f"repeat-{r.json()['run_id'][:12]}"
    children = json.loads((run / "run.json").read_text())["children"]
    assert [c["name"] for c in children] == ["split1", "split2"]
    splits = [json.loads((runs.parent / c["run_dir"] / "data.lock.json").read_text())["splits"] for c in children]
    assert all(sorted(s) == ["train", "val"] for s in splits) and splits[0]["val"] != splits[1]["val"]
    assert len((run / "per_repeat.csv").read_text().splitlines()) == 3
    assert (runs.parent / children[1]["run_dir"] / "checkpoints" / "model.safetensors").exists()
    assert "2 random 80/20 splits" in (run / "paper.md").read_text()
    one = cli("train", "sc-unext", *args, "-o", "dataset.split_seed=2", "--json")
    assert one.code == 0 and one.json()["reused"] and one.json()["run_id"] == children[1]["id"], one.err


def test_complexity_matches_the_cards_figures(cli, runs):
    r = cli("complexity", "sc-unext", "--dataset", "isic2018", "--fixture", "--runs-dir", runs,
            "-o", "complexity.models=[unext, sc-unext]", "-o", "complexity.sizes=[256]", "--json")
    assert r.code == 0, r.err
    models = r.json()["metrics"]["models"]
    assert models["unext"]["params"] == 253_561 and models["unext"]["params_k1024"] == 247.62
    assert models["unext"]["gmac_256"] == pytest.approx(0.099, abs=0.002)  # the paper's "0.10 GFLOPs"
    assert models["sc-unext"]["gmac_256"] == pytest.approx(0.13, abs=0.002)  # the paper's "0.13 GFLOPs"


# -- bad input ----------------------------------------------------------------------------------------------------
@pytest.fixture
def isic(tmp_path):
    from medrun.datasets import get

    return get("isic2018").make_fixture(tmp_path / "d", 0)


def _failed_run(runs):
    (run,) = (runs / "sc-unext").iterdir()
    assert not (run / "MANIFEST.sha256").exists()
    assert json.loads((run / "run.json").read_text())["status"] == "failed"


def test_mask_of_other_size_is_a_data_error(cli, runs, isic):
    bad = isic / "ISIC2018_Task1_Training_GroundTruth" / "ISIC_0000004_segmentation.png"
    Image.fromarray(np.zeros((50, 60), np.uint8)).save(bad)
    r = cli("train", "sc-unext", "--dataset", "isic2018", "--data-dir", isic, "--runs-dir", runs,
            "-o", "dataset.img_size=64")
    assert r.code == 3 and str(bad) in r.err and "60×50 but its image is 96×96" in r.err and "Traceback" not in r.err
    _failed_run(runs)


def test_mask_with_other_values_is_a_data_error(cli, runs, isic):
    bad = isic / "ISIC2018_Task1_Training_GroundTruth" / "ISIC_0000007_segmentation.png"
    arr = np.asarray(Image.open(bad)).copy()
    arr[arr == 255] = 1
    arr[0, 0] = 2
    Image.fromarray(arr).save(bad)
    r = cli("train", "sc-unext", "--dataset", "isic2018", "--data-dir", isic, "--runs-dir", runs,
            "-o", "dataset.img_size=64")
    assert r.code == 3 and str(bad) in r.err and "values other than 0 and 255" in r.err and "Traceback" not in r.err
    _failed_run(runs)


@pytest.mark.parametrize("include", ["[ISIC_0000003]", "[nothing*]"])
def test_empty_training_split_after_filtering(cli, runs, isic, include):
    r = cli("train", "sc-unext", "--dataset", "isic2018", "--data-dir", isic, "--runs-dir", runs,
            "-o", "dataset.img_size=64", "-o", f"dataset.include={include}")
    assert r.code == 3 and str(isic) in r.err and "dataset.include" in r.err and "Traceback" not in r.err
    _failed_run(runs)


def test_bad_ablation_variant_is_a_manifest_error(cli, runs):
    r = cli("ablate", "sc-unext", "--dataset", "isic2018", "--fixture", "--runs-dir", runs,
            "-o", "ablate.variants={x: {model.pfn: true}}")
    assert r.code == 2 and "ablate.variants.x" in r.err and "model has no 'pfn'" in r.err and "Traceback" not in r.err
    assert not runs.exists()


def test_unext_layout_and_wrong_folder(cli, runs, tmp_path):
    from medrun.datasets import isic2018

    root = isic2018.fixture(tmp_path / "u", 0, n=6, layout="unext")
    dry = cli("train", "sc-unext", "--dataset", "isic2018", "--data-dir", root, "--runs-dir", runs, "--dry-run",
              "--json")
    assert dry.code == 0 and dry.json()["data"]["isic2018"]["files"] == 12
    wrong = cli("train", "sc-unext", "--dataset", "isic2018", "--data-dir", root.parent, "--runs-dir", runs)
    assert wrong.code == 3 and f"use {root} instead" in wrong.err and not runs.exists()


@pytest.mark.slow
def test_monai_bundle_predicts_the_masks_medrun_predicts(cli, runs, tmp_path):
    """`medrun export`: MONAI's bundle runner loads the run offline and gives predict's masks (inputs at img_size,
    where both write the mask at the same size)."""
    import subprocess
    import sys

    args = ["--dataset", "isic2018", "--fixture", "--runs-dir", runs, "-o", "train.epochs=1", "-o", "eval.overlays=0"]
    r = cli("train", "sc-unext", *args, "--json")
    assert r.code == 0, r.err
    bundle, images, out = tmp_path / "bundle", tmp_path / "images", tmp_path / "out"
    assert cli("export", r.json()["run_dir"], "--out", bundle, "--runs-dir", runs).code == 0
    images.mkdir()
    lock = json.loads((runs / "sc-unext" / f"train-{r.json()['run_id'][:12]}" / "data.lock.json").read_text())
    for rel in lock["splits"]["val"][:2]:
        src = f"{lock['trees']['isic2018']['root']}/{rel}"
        Image.open(src).convert("RGB").resize((64, 64), Image.BILINEAR).save(images / f"{rel.rsplit('/', 1)[-1]}.png")
    proc = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file",
                           bundle / "configs" / "inference.yaml", "--meta_file", bundle / "configs" / "metadata.json",
                           "--bundle_root", bundle, "--input_dir", images, "--output_dir", out],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    theirs = json.loads((out / "predictions.json").read_text())
    p = cli("predict", "sc-unext", *args, "-o", f"predict.input={images}", "--json")
    assert p.code == 0 and len(theirs) == 2, p.err
    for name, v in theirs.items():
        ours = np.asarray(Image.open(f"{p.json()['run_dir']}/predictions/{name[:-4]}_segmentation.png")) > 0
        assert np.array_equal(ours, np.array(v["mask"], bool)), name


@pytest.mark.slow
def test_own_pairs_train_and_unlabelled_dicom_and_16_bit_files_predict_at_their_size(cli, runs, tmp_path):
    """Issue 21: ``--dataset pairs`` (the fixture mixes 16-bit PNG, float TIFF and DICOM images) trains a few epochs
    (learning on it is the pairs.fixture.yaml smoke: Dice 0.74 against ≥ 0.5); unlabelled inputs of those kinds get
    masks at their own size and a stray file is named."""
    from medrun.datasets import imageio

    small = ("--dataset", "pairs", "--fixture", "--runs-dir", runs, "-o", "dataset.img_size=32", "-o",
             "train.epochs=2", "-o", "eval.overlays=0")
    r = cli("train", "sc-unext", *small, "--json")
    assert r.code == 0, r.err
    assert r.json()["metrics"]["n_cases"] == 4
    new = tmp_path / "new"
    new.mkdir()
    Image.fromarray(np.full((40, 70), 30000, np.uint16)).save(new / "a.png")
    imageio.write_dicom_slice(new / "b.dcm", np.full((30, 20), 2000))
    (new / "notes.txt").write_text("not an image")
    p = cli("predict", "sc-unext", *small, "-o", f"predict.input={new}", "--json")
    assert p.code == 0, p.err
    assert f"skipped {new / 'notes.txt'}" in p.err
    out = runs / "sc-unext" / f"predict-{p.json()['run_id'][:12]}" / "predictions"
    assert Image.open(out / "a_segmentation.png").size == (70, 40)
    assert Image.open(out / "b_segmentation.png").size == (20, 30)
    import nibabel as nib  # DICOM in, NIfTI out, with the slice's affine

    assert nib.load(out / "b_segmentation.nii.gz").shape == (30, 20) and not (out / "a_segmentation.nii.gz").exists()
