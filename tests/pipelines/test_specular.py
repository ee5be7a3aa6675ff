"""specular: the classical steps against references (Eq. 5 saturation, false-region removal against scipy labels,
MMSER on phantoms, the metrics against scikit-learn), matching recovers a known homography, the fused detector on
the fixture through the CLI (above its ablations, inpainting removes the highlights), the covariant detector at the
card's full size, and bad input (an undecodable video, a mask of another size, a frame without a mask, the wrong
dataset for a stage)."""

import shutil

import numpy as np
import pytest
from scipy import ndimage as ndi

from medrun.datasets import specular as data
from medrun.pipelines.specular import features, method


# -- the classical steps ------------------------------------------------------------------------------------------
def test_saturation_is_eq5_as_written_and_hsv_matches_skimage():
    from skimage.color import rgb2hsv

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3)).astype(np.uint8)
    r, g, b = (rgb[..., i].astype(float) for i in range(3))
    ref = np.where(b + r >= 2 * g, (2 * r - g - b) / 2, (r + g - 2 * b) / 2)
    np.testing.assert_allclose(method.saturation(rgb), ref, atol=1e-4)
    assert (method.saturation(rgb) < 0).any()  # the card's ambiguity 3: Eq. 5 goes negative
    np.testing.assert_allclose(method.saturation(rgb, "hsv"), rgb2hsv(rgb)[..., 1] * 255, atol=1e-3)
    np.testing.assert_allclose(method.intensity(rgb), rgb.astype(float).mean(-1), atol=1e-4)


def test_false_region_removal_keeps_components_up_to_t_h_scaled_by_size():
    rng = np.random.default_rng(1)
    cand = ndi.binary_opening(rng.random((288, 384)) > 0.55)
    p = method.Params(t_h=20)
    lab, n = ndi.label(cand, np.ones((3, 3)))
    sizes = np.bincount(lab.ravel())
    ref = np.isin(lab, [i for i in range(1, n + 1) if sizes[i] <= 20])
    np.testing.assert_array_equal(method.remove_false_regions(cand, p), ref)
    assert method.t_h_for((576, 768), p) == pytest.approx(80)


def test_mmser_keeps_small_stable_bright_regions_only():
    img = np.full((120, 160), 60.0)
    yy, xx = np.ogrid[:120, :160]
    img[(yy - 30) ** 2 + (xx - 40) ** 2 <= 9] = 250  # a small plateau spot (29 px)
    img[(yy - 80) ** 2 + (xx - 110) ** 2 <= 400] = 240  # a bright blob larger than A_max
    img[10:12, 140:142] = 90  # below the intensity floor
    p = method.Params(a_max=0.005)  # 96 px
    m = method.mmser(img, p)
    spot = (yy - 30) ** 2 + (xx - 40) ** 2 <= 9
    assert (m == spot).all()
    assert method.mmser(img, method.Params(a_max=0.1)).sum() > spot.sum()  # the blob once A_max allows it
    cv = method.mmser(img, method.Params(a_max=0.005, mser_impl="opencv"))
    assert cv[spot].mean() > 0.9 and not cv[60:100, 90:130].any()


def test_scores_match_scikit_learn_and_pooled_counts():
    from sklearn.metrics import accuracy_score, f1_score, jaccard_score, precision_score, recall_score

    rng = np.random.default_rng(2)
    gt = rng.random((40, 50)) > 0.8
    pred = gt ^ (rng.random((40, 50)) > 0.9)
    s = method.scores(pred, gt)
    y, x = gt.ravel(), pred.ravel()
    for k, fn in (("accuracy", accuracy_score), ("precision", precision_score), ("recall", recall_score),
                  ("f1", f1_score), ("jaccard", jaccard_score)):
        assert s[k] == pytest.approx(fn(y, x)), k
    pooled = method.pooled([s, s])
    assert pooled["jaccard"] == pytest.approx(s["jaccard"]) and pooled["f1"] == pytest.approx(s["f1"])


def test_inpainting_removes_the_highlights():
    rng = np.random.default_rng(3)
    rgb = np.clip(ndi.gaussian_filter(rng.normal(120, 30, (96, 128, 3)), (3, 3, 0)), 0, 255).astype(np.uint8)
    mask = np.zeros((96, 128), bool)
    mask[40:44, 60:64] = True
    rgb[mask] = 255
    for how in ("ns", "telea", "arnold"):
        assert method.inpaint(rgb, mask, how)[mask].max() < 250, how


# -- matching -----------------------------------------------------------------------------------------------------
def test_matching_recovers_a_known_homography():
    import cv2

    rng = np.random.default_rng(4)
    tex = data._plane_texture(rng, 400)
    h1 = np.array([[1, 0, -60], [0, 1, -60], [0, 0, 1.0]])
    h2 = np.array([[0.98, -0.08, -40], [0.08, 0.98, -70], [1e-4, 0, 1.0]])
    a = method.intensity(cv2.warpPerspective(tex, h1, (160, 120)))
    b = method.intensity(cv2.warpPerspective(tex, h2, (160, 120)))
    h = h2 @ np.linalg.inv(h1)
    for kind in ("sift", "covariant"):
        fa, fb = features.extract(a, kind, 1500), features.extract(b, kind, 1500)
        p1, p2, inl = features.match(fa, fb)
        err = features.transfer_error(h, p1[inl], p2[inl])
        assert inl.sum() >= 20 and (err <= 3).mean() >= 0.8, (kind, inl.sum(), (err <= 3).mean())
    assert fa.lafs.shape[1:] == (2, 3) and fa.desc.shape[1] == 128


@pytest.mark.slow
def test_covariant_detector_at_full_size():
    """The card's detector at 384×288 with num_features 8000: LAFs (1, 8000, 2, 3), 128-D descriptors."""
    import torch

    net = features.covariant_net(8000, "dog")
    x = torch.from_numpy(data._plane_texture(np.random.default_rng(5), 400)[:288, :384].mean(-1) / 255).float()
    with torch.inference_mode():
        lafs, resp, desc = net(x[None, None])
    assert lafs.shape == (1, 8000, 2, 3) and resp.shape == (1, 8000) and desc.shape == (8000, 128)
    # weight-free, as the card says: only kornia's fixed filter taps (Gaussian windows, bin kernels; 294 in 0.9)
    assert sum(p.numel() for p in net.parameters()) < 1000


# -- through the CLI ----------------------------------------------------------------------------------------------
FAST = ["-o", "dataset.limit=4", "-o", "eval.methods=[fused,mmser,is]", "-o", "eval.figures=1"]


def test_learns_fused_detection_above_its_ablations(cli, runs):
    """On 4 fixture frames: fused Jaccard > 0.6, far above IS-only (false-region removal), not below MMSER-only;
    the inpainted frames keep no pixel ≥ 250 inside S_R; per-image CSV, overlays and paper.md with Table 1."""
    r = cli("eval", "specular", "--dataset", "cvc-clinicspec", "--fixture", "--runs-dir", runs, "--json", *FAST)
    assert r.code == 0, r.err
    m = r.json()["metrics"]
    assert m["jaccard"] > 0.6 and m["fused_minus_is_jaccard"] > 0.3 and m["fused_minus_mmser_jaccard"] >= 0, m
    assert m["inpaint_max_in_sr"] < 250, m
    run = runs / "specular" / f"eval-{r.json()['run_id'][:12]}"
    assert "Table 1" in (run / "paper.md").read_text() and "not comparable" in (run / "paper.md").read_text()
    assert len((run / "per_case.csv").read_text().splitlines()) == 1 + 4 * 3
    assert any((run / "figures" / "overlays").iterdir())


def _nothing_complete(runs, r):
    assert "Traceback" not in r.err and len([ln for ln in r.err.splitlines() if "error" in ln.lower()]) <= 1, r.err
    assert not list(runs.glob("**/MANIFEST.sha256"))


@pytest.fixture
def cvc(tmp_path):
    from medrun.pipelines.runner import fixture_root

    return shutil.copytree(fixture_root("cvc-clinicspec", log=lambda *_: None), tmp_path / "cvc")


def test_mask_of_another_size_names_the_file(cli, runs, cvc):
    from PIL import Image

    bad = cvc / "masks" / "002.png"
    Image.new("L", (100, 80)).save(bad)
    r = cli("eval", "specular", "--dataset", "cvc-clinicspec", "--data-dir", cvc, "--runs-dir", runs, *FAST)
    assert r.code == 3 and str(bad) in r.err and "100×80" in r.err, r.err
    _nothing_complete(runs, r)


def test_frame_without_mask_names_the_file(cli, runs, cvc):
    (cvc / "masks" / "003.png").unlink()
    r = cli("eval", "specular", "--dataset", "cvc-clinicspec", "--data-dir", cvc, "--runs-dir", runs, *FAST)
    assert r.code == 3 and "003.png has no mask" in r.err, r.err
    _nothing_complete(runs, r)


def test_video_opencv_cannot_decode_names_the_file(cli, runs, tmp_path):
    folder = tmp_path / "hk" / data.KVASIR_SUBDIR
    folder.mkdir(parents=True)
    bad = folder / "broken.avi"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00AVI not really a video" * 50)
    r = cli("match", "specular", "--dataset", "hyper-kvasir", "--data-dir", tmp_path / "hk", "--runs-dir", runs,
            "-o", "match.detectors=[sift]")
    assert r.code == 3 and str(bad) in r.err and "OpenCV cannot" in r.err, r.err
    _nothing_complete(runs, r)


def test_stage_on_the_wrong_dataset_is_a_usage_error(cli, runs, tmp_path):
    folder = tmp_path / "hk" / data.KVASIR_SUBDIR
    folder.mkdir(parents=True)
    (folder / "a.avi").write_bytes(b"x")
    r = cli("eval", "specular", "--dataset", "hyper-kvasir", "--data-dir", tmp_path / "hk", "--runs-dir", runs)
    assert r.code == 2 and "--dataset cvc-clinicspec" in r.err, r.err
    _nothing_complete(runs, r)
