"""totalct-sam: learning on the fixture, eval/predict on the finished run, metrics, clicks, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medrun.pipelines.totalct_sam.pipeline import case_scores, simulate_clicks

SLUG, DS = "totalct-sam", "totalsegmentator"


@pytest.fixture(autouse=True)
def _one_thread():
    """On the shared 2-core machine one intra-op thread is ~10× faster than two contending ones."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_case_scores_per_present_class():
    gt = np.zeros((4, 4, 4), np.int16)
    gt[:2] = 1  # class a: 32 voxels
    gt[3, :2] = 3  # class c: 8 voxels; class b absent (not averaged)
    pred = np.zeros_like(gt)
    pred[:1] = 1  # half of a
    pred[3, :2] = 3  # all of c
    pred[2, 0, 0] = 2  # a false positive of the absent class b: ignored
    scores, per_class = case_scores(pred, gt, ["a", "b", "c"])
    assert set(per_class) == {"a", "c"}
    assert per_class["a"]["dice"] == pytest.approx(2 * 16 / (16 + 32)) and per_class["a"]["iou"] == pytest.approx(0.5)
    assert per_class["a"]["recall"] == pytest.approx(0.5) and per_class["c"]["dice"] == 1
    assert scores["dice"] == pytest.approx((2 / 3 + 1) / 2) and scores["accuracy"] == pytest.approx(0.75)
    assert scores["pixel_accuracy"] == pytest.approx(1 - 17 / 64) and scores["n_classes"] == 2


def test_click_simulation():
    torch.manual_seed(0)
    label = torch.zeros(2, 8, 8, 8, dtype=torch.long)
    label[0, :4] = 2
    label[1, 4:, 4:] = 1
    pred = torch.zeros_like(label)
    pred[1, :, :] = 1  # over-segments class 1 in volume 1
    for _ in range(10):
        (coords, labels), target = simulate_clicks(label, pred, max_clicks=5)
        assert coords.shape[:2] == labels.shape and target.shape == (2, 1, 8, 8, 8)
        for b in range(2):
            first = tuple(coords[b, 0].long().tolist())
            assert labels[b, 0] == 1 and target[b, 0][first] == 1  # first click inside the class
            for j in range(1, labels.shape[1]):
                if labels[b, j] >= 0:
                    v = tuple(coords[b, j].long().tolist())
                    assert labels[b, j] == int(target[b, 0][v])  # positive on misses, negative on false positives
    empty = torch.zeros(1, 4, 4, 4, dtype=torch.long)
    assert simulate_clicks(empty, empty, 3)[0] is None


@pytest.mark.slow
def test_learns_on_fixture_then_eval_predict(cli, runs):
    """A smaller smoke: 24 epochs × 5 steps without flips (they hide the left/right position cue), val Dice
    clearly above chance (≈0) in about a minute on 2 cores."""
    small = ("--dataset", DS, "--fixture", "--runs-dir", runs, "-o", "train.epochs=24", "-o", "dataset.flip_prob=0")
    r = cli("train", SLUG, *small, "--json")
    assert r.code == 0, r.err
    out = r.json()
    # chance (random labels) is ≈0.02–0.06 per organ, all-background 0; the full 400-step smoke reaches ≥ 0.6
    assert out["metrics"]["dice"] >= 0.1, out["metrics"]
    assert out["metrics"]["per_class"]["liver"]["dice"] >= 0.4, out["metrics"]["per_class"]
    run = runs / SLUG / f"train-{out['run_id'][:12]}"
    for f in ("classes.json", "per_case.csv", "per_class.csv", "paper.md", "checkpoints/model.safetensors",
              "figures/learning_curves.png", "MANIFEST.sha256"):
        assert (run / f).exists(), f
    assert json.loads((run / "classes.json").read_text())["liver"] == 3
    assert "Table 2" in (run / "paper.md").read_text() and "liver" in (run / "paper.md").read_text()
    assert list((run / "figures").glob("overlay_*.png"))
    assert out["metrics"]["memory_entries"] == 512

    ev = cli("eval", SLUG, *small, "--json")
    assert ev.code == 0, ev.err
    assert ev.json()["metrics"]["dice"] == pytest.approx(out["metrics"]["dice"])  # memory frozen, same weights
    test = cli("eval", SLUG, *small, "--split", "test", "--json")
    assert test.code == 0 and test.json()["metrics"]["n_cases"] == 1

    pred = cli("predict", SLUG, *small, "--json")
    assert pred.code == 0, pred.err
    pdir = runs / SLUG / f"predict-{pred.json()['run_id'][:12]}" / "predictions"
    import nibabel as nib

    assert nib.load(pdir / "s0005.nii.gz").shape == (48, 48, 48)
    point = cli("predict", SLUG, *small, "-o", "predict.point=[20,24,26]", "--json")
    assert point.code == 0, point.err
    assert point.json()["metrics"]["mode"] == "point"
    clicked = runs / SLUG / f"predict-{point.json()['run_id'][:12]}" / "predictions" / "s0005_point.nii.gz"
    assert set(np.unique(np.asarray(nib.load(clicked).dataobj))) <= {0, 1}


def test_ablation_and_full_size_dry_run(cli, runs):
    full = cli("train", SLUG, "--dataset", DS, "--fixture", "--runs-dir", runs, "--dry-run", "--json",
               "-o", "model.img_size=128", "-o", "model.patch_size=16", "-o", "model.embed_dim=768",
               "-o", "model.depth=12", "-o", "model.num_heads=12", "-o", "model.window_size=14",
               "-o", "model.global_attn_indexes=[2,5,8,11]", "-o", "model.prompt_dim=384",
               "-o", "model.decoder_depth=2", "-o", "model.decoder_mlp_dim=2048", "-o", "model.memory_size=16")
    assert full.code == 0, full.err
    ablation = cli("train", SLUG, "--dataset", DS, "--fixture", "--runs-dir", runs, "--dry-run", "--json",
                   "-o", "model.memory=false")
    small = cli("train", SLUG, "--dataset", DS, "--fixture", "--runs-dir", runs, "--dry-run", "--json")
    assert small.json()["params_total"] - ablation.json()["params_total"] == 3 * (96 * 48 + 48) + 48 * 96 + 96 + 200
    # dry-run builds with the v1 default of 104 classes (the dataset is read only when a stage runs)
    assert full.json()["params_total"] == 100_863_712 + 296_648


def test_bad_class_name(cli, runs):
    r = cli("train", SLUG, "--dataset", DS, "--fixture", "--runs-dir", runs, "-o", "dataset.classes=[liver,splen]")
    assert r.code == 2 and "unknown class 'splen'" in r.err and "spleen" in r.err and "segmentations" in r.err
    assert "Traceback" not in r.err
    assert not list((runs / SLUG).glob("*/MANIFEST.sha256"))  # nothing marked complete


def test_segmentation_shape_mismatch(cli, runs, tmp_path):
    import nibabel as nib

    from medrun.datasets import get

    root = get(DS).make_fixture(tmp_path / "d", 0)
    bad = root / "s0006" / "segmentations" / "spleen.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((48, 48, 40), np.uint8), np.diag([-1.5, -1.5, 1.5, 1])), bad)
    r = cli("train", SLUG, "--dataset", DS, "--data-dir", root, "--runs-dir", runs, "-o", "train.epochs=1",
            "-o", "model.img_size=32", "-o", "model.patch_size=8", "-o", "model.embed_dim=48", "-o", "model.depth=1",
            "-o", "model.num_heads=4", "-o", "model.window_size=4", "-o", "model.global_attn_indexes=[0]",
            "-o", "model.prompt_dim=48", "-o", "model.decoder_depth=1", "-o", "model.decoder_mlp_dim=96",
            "-o", "model.memory_size=64", "-o", "train.cache=true")
    assert r.code == 3, r.err
    assert str(bad) in r.err and "(48, 48, 40)" in r.err and "Traceback" not in r.err
    assert not list((runs / SLUG).glob("*/MANIFEST.sha256"))


@pytest.mark.parametrize("kind", ["corrupt", "sam2d"])
def test_bad_sammed3d_checkpoint(cli, runs, tmp_path, kind):
    path = tmp_path / "sam_med3d.pth"
    if kind == "corrupt":
        path.write_bytes(b"\x80\x04 not a checkpoint")
    else:
        torch.save({"model_state_dict": {"image_encoder.patch_embed.proj.weight": torch.zeros(96, 3, 8, 8)}}, path)
    r = cli("train", SLUG, "--dataset", DS, "--fixture", "--runs-dir", runs, "-o", f"model.sammed3d_checkpoint={path}")
    assert r.code == (3 if kind == "corrupt" else 2), r.err
    assert str(path) in r.err and "Traceback" not in r.err
    assert not list((runs / SLUG).glob("*/MANIFEST.sha256"))


def test_sammed3d_checkpoint_reports_new_keys(cli, runs, tmp_path):
    """A checkpoint of the same (small) SAM-Med3D layout: only the new modules are missing."""
    from medrun.models.sam3d import Sam3D, Sam3dConfig

    cfg = Sam3dConfig(img_size=32, patch_size=8, embed_dim=96, depth=2, num_heads=4, window_size=4,
                      global_attn_indexes=(1,), prompt_dim=96, decoder_depth=1, decoder_mlp_dim=192)
    path = tmp_path / "sam_med3d_turbo.pth"
    torch.save({"model_state_dict": Sam3D(cfg).state_dict(), "epoch": 3}, path)
    r = cli("train", SLUG, "--dataset", DS, "--fixture", "--runs-dir", runs, "-o", f"model.sammed3d_checkpoint={path}",
            "-o", "train.epochs=1", "--json")
    assert r.code == 0, r.err
    run = runs / SLUG / f"train-{r.json()['run_id'][:12]}"
    info = json.loads((run / "sammed3d_load.json").read_text())
    assert info["unexpected"] == [] and info["missing"]
    assert all(k.startswith(("mask_decoder.class_tokens", "mask_decoder.class_hypernetwork",
                             "mask_decoder.image_token_block")) for k in info["missing"])
