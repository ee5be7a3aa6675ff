"""endo-depth: DVTwin at full size, the losses and warps against references, learning on the Hamlyn fixture
(then eval, predict with a .ply, and SCARED fine-tuning from the Hamlyn run), and bad depth maps through the CLI."""

import json

import numpy as np
import pytest
import torch

from medrun.pipelines.endo_depth import method as M


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_full_size_dvtwin_matches_card():
    """Card: p = 4, D = 384, 4 blocks, 6 heads: 224 → grids 56, 28, 14, 7; the encoder is the card's "about 7 M"."""
    from medrun.models import create

    net = create("dvtwin").eval()
    d = 384
    block = (d * 3 * d + 3 * d) + (d * d + d) + 2 * 2 * d + (d * 4 * d + 4 * d) + (4 * d * d + d)
    assert sum(p.numel() for p in net.encoder.parameters()) == 3 * 16 * d + d + 4 * block == 7_116_672
    assert sum(p.numel() for p in net.parameters()) == 15_254_241
    with torch.no_grad():
        feats = net.encoder(torch.zeros(1, 3, 224, 224))
        out = net(torch.rand(1, 3, 224, 224), torch.rand(1, 3, 224, 224))
    assert [f.shape[-1] for f in feats] == [56, 28, 14, 7] and all(f.shape[1] == d for f in feats)
    assert out.shape == (1, 1, 224, 224) and 0 < float(out.min()) and float(out.max()) < 1
    assert create("dvtwin", depth=12).encoder.stage_blocks == [3, 3, 3, 3]
    absdiff = create("dvtwin", fusion="absdiff")
    assert sum(p.numel() for p in absdiff.fusion.parameters()) == 0


def test_ssim_matches_skimage_inside_the_border():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    x = rng.random((12, 14)).astype(np.float32)
    y = np.clip(x + 0.2 * rng.standard_normal(x.shape), 0, 1).astype(np.float32)
    _, ref = structural_similarity(x, y, win_size=3, gaussian_weights=False, use_sample_covariance=False,
                                   data_range=1.0, K1=0.01, K2=0.03, full=True)
    ours = M.ssim(torch.from_numpy(x)[None, None], torch.from_numpy(y)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(ours[1:-1, 1:-1], ref[1:-1, 1:-1], atol=1e-5)
    loss = M.photometric(torch.from_numpy(x)[None, None], torch.from_numpy(y)[None, None], 0.85, 0.15)
    assert float(loss) == pytest.approx(float(np.mean(0.85 * (1 - ours) / 2 + 0.15 * np.abs(x - y))), rel=1e-5)


def test_warp_and_shear_against_loops():
    from scipy import ndimage

    rng = np.random.default_rng(1)
    right = rng.random((1, 1, 6, 9)).astype(np.float32)
    disp = np.full((1, 1, 6, 9), 2.0, np.float32)
    out = M.warp_right_to_left(torch.from_numpy(right), torch.from_numpy(disp))[0, 0].numpy()
    for y in range(6):
        for x in range(9):
            assert out[y, x] == pytest.approx(right[0, 0, y, max(x - 2, 0)], abs=1e-5)
    img = rng.random((1, 1, 8, 10)).astype(np.float32)
    t = np.tan(np.deg2rad(7.0))
    yy, xx = np.mgrid[0:8, 0:10].astype(np.float64)
    ref = ndimage.map_coordinates(img[0, 0], [yy, xx - t * (yy + 0.5 - 4)], order=1, mode="nearest")
    np.testing.assert_allclose(M.shear(torch.from_numpy(img), 7.0)[0, 0].numpy(), ref, atol=1e-5)


def test_smoothness_mask_and_selection_metric():
    flat = torch.ones(2, 1, 8, 8)
    assert float(M.smoothness(flat, torch.rand(2, 3, 8, 8))) == 0.0
    ramp = torch.arange(8.0).repeat(8, 1)[None, None] + 1
    d = ramp / ramp.mean()
    assert float(M.smoothness(ramp, torch.zeros(1, 3, 8, 8))) == pytest.approx(
        float((d[..., :, 1:] - d[..., :, :-1]).abs().mean()), rel=1e-6)
    m = M.patch_mask(3, 64, 64, 0.2, 16)
    assert m.shape == (3, 1, 64, 64) and all(int((1 - mi).sum()) == 3 * 256 for mi in m)
    from medrun.metrics.depth import depth_errors

    gt = torch.rand(2, 1, 5, 5) * 80 + 40
    gt[0, 0, 0, :2] = 0  # odd counts: torch.median is the lower median, numpy averages the middle two
    pred = gt * 0.01 * (1 + 0.1 * torch.rand_like(gt))
    ours = M.scaled_abs_rel(pred, gt)
    for i in range(2):
        assert float(ours[i]) == pytest.approx(depth_errors(pred[i, 0], gt[i, 0])["abs_rel"], abs=2e-3)


@pytest.mark.slow
def test_learns_on_hamlyn_fixture_then_eval(cli, runs):
    """The card's smoke, shortened (6 epochs): the photometric loss falls and the median-scaled AbsRel on the
    held-out video clearly beats a constant-depth predictor (about 0.21 on the fixture)."""
    r = cli("train", "endo-depth", "--dataset", "hamlyn", "--fixture", "--runs-dir", runs, "--json",
            "-o", "train.epochs=6", "-o", "eval.test_selected=false")
    assert r.code == 0, r.err
    out = r.json()
    m = out["metrics"]
    assert m["photometric_drop"] > 0.03, m
    assert m["abs_rel"] < m["const_abs_rel"] - 0.04 and m["split"] == "test" and m["n_frames"] == 10, m
    run = runs / "endo-depth" / f"train-{out['run_id'][:12]}"
    for f in ("per_case.csv", "paper.md", "checkpoints/model.safetensors", "checkpoints/best_val.ckpt",
              "figures/depth_examples.png", "figures/abs_rel_per_video.png", "figures/learning_curves.png"):
        assert (run / f).exists(), f
    assert "0.0840" in (run / "paper.md").read_text() and "not comparable" in (run / "paper.md").read_text()

    ev = cli("eval", "endo-depth", "--dataset", "hamlyn", "--fixture", "--runs-dir", runs, "--json",
             "-o", "train.epochs=6", "-o", "eval.test_selected=false")
    assert ev.code == 0, ev.err
    assert ev.json()["metrics"]["abs_rel"] == pytest.approx(m["abs_rel"], abs=1e-6)



@pytest.mark.slow
def test_predict_writes_depth_png_and_ply_and_finetune_starts_from_the_train_run(cli, runs, tmp_path):
    from medrun.datasets import hamlyn

    r = cli("train", "endo-depth", "--dataset", "hamlyn", "--fixture", "--runs-dir", runs, "--json",
            "-o", "train.epochs=1", "-o", "eval.test_selected=false")
    assert r.code == 0, r.err
    out = r.json()
    root = hamlyn.fixture(tmp_path / "one", n_videos=1, frames=1)
    pred = cli("predict", "endo-depth", "--dataset", "hamlyn", "--fixture", "--runs-dir", runs, "--json",
               "--run", out["run_id"][:12], "-o", f"predict.input={root / 'rectified01' / 'image01'}")
    assert pred.code == 0, pred.err
    prun = runs / "endo-depth" / f"predict-{pred.json()['run_id'][:12]}"
    from PIL import Image

    with Image.open(prun / "predictions" / "0000000001_depth.png") as im:
        assert im.mode.startswith("I") and im.size == (128, 96)
        depth = np.asarray(im)
    assert 20 < np.median(depth[depth > 0]) < 200  # mm, through the train run's median scale
    assert (prun / "predictions" / "0000000001.ply").read_bytes().startswith(b"ply")

    ft = cli("finetune", "endo-depth", "--dataset", "scared", "--fixture", "--runs-dir", runs, "--json",
             "--run", out["run_id"][:12], "-o", "train.epochs=1", "-o", "eval.test_selected=false")
    assert ft.code == 0, ft.err
    assert json.loads((runs / "endo-depth" / f"finetune-{ft.json()['run_id'][:12]}" / "run.json").read_text())[
        "parent"] == out["run_id"]


def _bad_root(tmp_path, what):
    from PIL import Image

    from medrun.datasets import hamlyn

    root = hamlyn.fixture(tmp_path / "ham", n_videos=4, frames=2)
    bad = root / "rectified02" / "depth01" / "0000000002.png"
    with Image.open(bad) as im:
        arr = np.asarray(im)
    if what == "8bit":
        Image.fromarray((arr // 2).astype(np.uint8)).save(bad)
    else:
        Image.fromarray(arr[:, :100]).save(bad)
    return root, bad


@pytest.mark.parametrize("what, words", [("8bit", "8-bit"), ("size", "100×96")])
def test_bad_depth_png_is_a_data_error_naming_the_file(cli, runs, tmp_path, what, words):
    root, bad = _bad_root(tmp_path, what)
    r = cli("train", "endo-depth", "--dataset", "hamlyn", "--data-dir", root, "--runs-dir", runs,
            "-o", "dataset.size=64", "-o", "model.dim=32", "-o", "model.heads=2")
    assert r.code == 3, r.err
    line = [x for x in r.err.strip().splitlines() if str(bad) in x]
    assert line and words in line[0] and "Traceback" not in r.err
    assert not list(runs.rglob("MANIFEST.sha256"))


def test_bad_splits_are_refused(cli, runs, tmp_path):
    from medrun.datasets import hamlyn

    root = hamlyn.fixture(tmp_path / "ham", n_videos=2, frames=1)
    r = cli("train", "endo-depth", "--dataset", "hamlyn", "--data-dir", root, "--runs-dir", runs,
            "-o", "dataset.size=64", "-o", "model.dim=32", "-o", "model.heads=2")
    assert r.code == 3 and "dataset.val names video 03" in r.err, r.err
    r = cli("train", "endo-depth", "--dataset", "hamlyn", "--data-dir", root, "--runs-dir", runs,
            "-o", 'dataset.test=["03"]')
    assert r.code == 2 and "share 03" in r.err, r.err
    assert not list(runs.rglob("MANIFEST.sha256"))
