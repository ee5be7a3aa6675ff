"""transnet-oct: the architecture at full size, Algorithm 1 against its pixel-by-pixel reference, the metrics,
learning on the fixture through the CLI, predict, and bad input."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from medrun.models.transnet_oct import FPN25D, TransNetOCT, UNet25D, load_resnet50_weights, resnet50_encoder
from medrun.pipelines.transnet_oct.pipeline import aggregate, slice_scores
from medrun.pipelines.transnet_oct.propagate import propagate, propagate_reference


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_full_size_shapes_and_encoder_is_resnet50():
    # torchvision's resnet50 without fc has 23,508,032 parameters; conv1 for 9 inputs adds 64·6·49
    assert n_params(resnet50_encoder(3)) == 23_508_032
    assert n_params(resnet50_encoder(9)) == 23_508_032 + 64 * 6 * 49
    net = TransNetOCT().eval()  # card: 9×256×256 → 12×5×256×256, D 512, M 4, 8 heads
    assert net.pos.shape == (1, 64, 512) and len(net.transformer.layers) == 4
    assert n_params(net) == 38_679_996
    with torch.no_grad():
        assert net(torch.rand(1, 9, 256, 256)).shape == (1, 12, 5, 256, 256)
        assert UNet25D(5).eval()(torch.rand(1, 5, 64, 64)).shape == (1, 12, 5, 64, 64)
        assert FPN25D(9).eval()(torch.rand(1, 9, 64, 64)).shape == (1, 12, 5, 64, 64)


def test_tiled_imagenet_conv1_keeps_the_activation_scale():
    rgb = resnet50_encoder(3)
    state = {k: v for k, v in rgb.state_dict().items()}
    enc = resnet50_encoder(9)
    assert load_resnet50_weights(enc, state, 9) == []
    x = torch.rand(1, 3, 32, 32)
    assert torch.allclose(enc.conv1(x.repeat(1, 3, 1, 1)), rgb.conv1(x), atol=1e-5)


def test_propagation_from_an_identical_neighbour_reproduces_the_labels():
    rng = np.random.default_rng(0)
    m = rng.random((40, 48)).astype(np.float32)
    ml = rng.integers(0, 12, (40, 48)).astype(np.uint8)
    assert np.array_equal(propagate(m, ml, m.copy()), ml)


def test_priors_cache_returns_what_algorithm_1_gives(tmp_path):
    from medrun.pipelines.transnet_oct.propagate import cached_priors, stack_priors

    rng = np.random.default_rng(2)
    img = rng.random((5, 16, 16)).astype(np.float32)
    mid = rng.integers(0, 12, (16, 16)).astype(np.uint8)
    want = stack_priors(img, mid, 0.04, 5)
    assert np.array_equal(cached_priors(img, mid, 0.04, 5, tmp_path), want)
    (entry,) = (tmp_path / "transnet-oct").glob("*.npz")
    assert np.array_equal(cached_priors(img, mid, 0.04, 5, tmp_path), want)  # read back
    assert len(list((tmp_path / "transnet-oct").glob("*.npz"))) == 1 and entry.exists()
    cached_priors(img, mid, 0.05, 5, tmp_path)  # another λ: another entry
    assert len(list((tmp_path / "transnet-oct").glob("*.npz"))) == 2


@pytest.mark.parametrize("tol, omega", [(0.04, 11), (0.01, 5), (0.2, 3)])
def test_vectorised_propagation_matches_algorithm_1(tol, omega):
    rng = np.random.default_rng(1)
    m = rng.random((14, 17)).astype(np.float32)
    ml = rng.integers(0, 12, (14, 17)).astype(np.uint8)
    q = np.clip(m + rng.normal(0, 0.1, m.shape), 0, 1).astype(np.float32)
    q[0, 0] = 5.0  # matches nothing: label 0
    ours = propagate(m, ml, q, tol, omega)
    assert np.array_equal(ours, propagate_reference(m, ml, q, tol, omega))
    assert ours[0, 0] == 0


def test_slice_scores_on_known_shapes():
    gt = np.zeros((20, 20), np.uint8)
    gt[5:10] = 1
    pred = np.zeros_like(gt)
    pred[6:11] = 1  # one row lower
    s = slice_scores(pred, gt, 3)
    assert s[1]["dsc"] == pytest.approx(0.8) and s[1]["sens"] == pytest.approx(0.8)
    assert 2 not in s  # absent from both: skipped
    assert s[1]["assd"] == pytest.approx(s[1]["masd"]) and 0 < s[1]["assd"] <= 1
    missed = slice_scores(np.zeros_like(gt), gt, 2)[1]
    assert missed["dsc"] == 0 and missed["assd"] == pytest.approx(np.hypot(20, 20))
    agg = aggregate([s, {0: s[0], 1: missed}], 3)
    assert agg["dsc_BG"] == pytest.approx(s[0]["dsc"]) and agg["dsc_NFL"] == pytest.approx(0.4)
    assert np.isnan(agg["dsc_GCL"]) and agg["dsc"] == pytest.approx((agg["dsc_BG"] + 0.4) / 2)


@pytest.mark.slow
def test_learns_on_fixture_with_prior(cli, runs):
    """Fixture manifest (64², ResNet-50 random init, D 64, M 1, 3 epochs), fold 0 of 2: mean DSC over the 12 classes
    clearly above the majority-class baseline (about 0.06)."""
    r = cli("train", "transnet-oct", "--dataset", "oct-layers", "--fixture", "--runs-dir", runs, "--json")
    assert r.code == 0, r.err
    out = r.json()
    m = out["metrics"]
    assert m["dsc"] > m["dsc_majority"] + 0.04, m
    run = runs / "transnet-oct" / f"train-{out['run_id'][:12]}"
    for f in ("per_case.csv", "paper.md", "checkpoints/model.safetensors", "figures/per_layer_dsc.png",
              "figures/overlay_P002.png", "figures/learning_curves.png", "MANIFEST.sha256"):
        assert (run / f).exists(), f
    assert "Table 1" in (run / "paper.md").read_text() and "not comparable" in (run / "paper.md").read_text()
    assert {len(v) for v in json.loads((run / "data.lock.json").read_text())["splits"].values()} == {3}


def _fixture(tmp_path):
    from medrun.datasets import get

    return get("oct-layers").make_fixture(tmp_path, 0)


def _not_complete(runs):
    d = runs / "transnet-oct"
    assert not d.exists() or not any((p / "MANIFEST.sha256").exists() for p in d.iterdir())


def test_propagate_stage_writes_priors(cli, runs, tmp_path):
    root = _fixture(tmp_path)
    r = cli("propagate", "transnet-oct", "--dataset", "oct-layers", "--data-dir", root, "--runs-dir", runs,
            "-o", "eval.overlays=1", "--json")
    assert r.code == 0, r.err
    m = r.json()["metrics"]
    assert m["patients"] == 6 and m["prior_pixel_accuracy"] > 0.7 and m["prior_dsc"] > 0.5, m
    run = runs / "transnet-oct" / f"propagate-{r.json()['run_id'][:12]}"
    prior = nib.load(str(run / "priors" / "P001_prior.nii.gz"))
    assert prior.shape == (9, 64, 64) and (run / "figures" / "prior_P001.png").exists()


@pytest.mark.parametrize("case", ["value", "none"])
def test_bad_labels_exit_3_with_one_line_and_no_run(cli, runs, tmp_path, case):
    root = _fixture(tmp_path)
    lab = root / "P003" / "labels.nii.gz"
    img = nib.load(str(lab))
    arr = np.asarray(img.dataobj).copy()
    if case == "value":
        arr[4, 10, 10] = 40
    else:
        arr[:] = 255
    nib.save(nib.Nifti1Image(arr, img.affine), str(lab))
    r = cli("train", "transnet-oct", "--dataset", "oct-layers", "--data-dir", root, "--runs-dir", runs,
            "-o", "dataset.folds=2", "-o", "dataset.img_size=64")
    assert r.code == 3 and str(lab) in r.err and "Traceback" not in r.err, r.err
    assert ("[40]" if case == "value" else "no annotated B-scan") in r.err
    _not_complete(runs)


def test_manifest_and_split_errors(cli, runs, tmp_path):
    bad = cli("train", "transnet-oct", "--dataset", "oct-layers", "--fixture", "--runs-dir", runs,
              "-o", "dataset.img_size=100")
    assert bad.code == 2 and "multiple of 32" in bad.err
    bad = cli("train", "transnet-oct", "--dataset", "oct-layers", "--fixture", "--runs-dir", runs,
              "-o", "cv.variants={\"x\": {\"model.colour\": 1}}")
    assert bad.code == 2 and "model has no 'colour'" in bad.err
    root = _fixture(tmp_path)
    r = cli("train", "transnet-oct", "--dataset", "oct-layers", "--data-dir", root, "--runs-dir", runs,
            "-o", "dataset.folds=7", "-o", "dataset.img_size=64")
    assert r.code == 3 and "6 patient(s)" in r.err and "cannot make 7 folds" in r.err and "Traceback" not in r.err
    _not_complete(runs)


@pytest.mark.slow
def test_no_prior_predict_and_fovea_labels_from_a_no_prior_model(cli, runs):
    """A 1-epoch no-prior train run predicts label volumes; with prior.mid_label_source model its fovea slice
    replaces the ground truth as M_L of Algorithm 1."""
    short = ["-o", "model.prior=false", "-o", "train.epochs=1", "-o", "eval.overlays=0"]
    r = cli("train", "transnet-oct", "--dataset", "oct-layers", "--fixture", "--runs-dir", runs, "--json", *short)
    assert r.code == 0, r.err
    weights = runs / "transnet-oct" / f"train-{r.json()['run_id'][:12]}" / "checkpoints" / "model.safetensors"
    ev = cli("eval", "transnet-oct", "--dataset", "oct-layers", "--fixture", "--runs-dir", runs, "--json", *short)
    assert ev.code == 0, ev.err
    assert ev.json()["metrics"]["dsc"] == pytest.approx(r.json()["metrics"]["dsc"], abs=1e-6)
    page = (runs / "transnet-oct" / f"eval-{ev.json()['run_id'][:12]}" / "paper.md").read_text()
    assert "| dsc |" in page and "0.5988" in page  # the paper's no-prior row is the comparison
    p = cli("predict", "transnet-oct", "--dataset", "oct-layers", "--fixture", "--runs-dir", runs, "--json", *short)
    assert p.code == 0, p.err
    pred_run = runs / "transnet-oct" / f"predict-{p.json()['run_id'][:12]}"
    vol = np.asarray(nib.load(str(pred_run / "predictions" / "P002_labels.nii.gz")).dataobj)
    assert vol.shape == (9, 64, 64) and set(np.unique(vol)) <= set(range(12)) | {255}
    assert (vol[0] == 255).all() and (vol[2:7] != 255).all()  # P002's fovea is B-scan 4

    p = cli("propagate", "transnet-oct", "--dataset", "oct-layers", "--fixture", "--runs-dir", runs, "--json",
            "-o", "prior.mid_label_source=model", "-o", f"prior.mid_model={weights}", "-o", "eval.overlays=0")
    assert p.code == 0, p.err
    m = p.json()["metrics"]
    assert m["mid_label_source"] == "model" and 0 <= m["prior_dsc"] <= 1 and m["patients"] == 6
    run = runs / "transnet-oct" / f"propagate-{p.json()['run_id'][:12]}"
    assert json.loads((run / "run.json").read_text())["mid_model_sha256"]
    bad = cli("propagate", "transnet-oct", "--dataset", "oct-layers", "--fixture", "--runs-dir", runs,
              "-o", "prior.mid_label_source=model")
    assert bad.code == 2 and "needs prior.mid_model" in bad.err
