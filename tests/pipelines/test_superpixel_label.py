"""superpixel-label: the U-Net and DuAT at full size, the simulated annotator and the fills against brute-force
references, zero gradient on ignored pixels, the gap identity, learning on the fixture (table1 with its gap-stats
child, then eval), annotate, and bad input through the CLI."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from medrun.errors import EnvError
from medrun.pipelines.superpixel_label import method as M
from medrun.pipelines.superpixel_label import pipeline as P


@pytest.fixture(autouse=True)
def _one_thread():
    """Two cores shared with other jobs: one intra-op thread is many times faster than two spinning ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _classic_unet_params(cin: int, base: int = 64) -> int:
    """Parameters of the classic U-Net written out: convs without bias + BN (2 per channel), transposed convs
    2×2 with bias, the 1×1 head with bias."""
    ch = [base * 2**i for i in range(5)]

    def double(a, b):
        return 9 * a * b + 2 * b + 9 * b * b + 2 * b

    n = double(cin, ch[0]) + sum(double(ch[i], ch[i + 1]) for i in range(4))
    n += sum(4 * ch[i + 1] * ch[i] + ch[i] + double(2 * ch[i], ch[i]) for i in range(4))
    return n + ch[0] + 1


def test_full_size_unet_is_the_classic_one():
    from medrun.models import create
    from medrun.models.unet_classic import ClassicUNet

    net = ClassicUNet(3, 1, base=64, dropout=0.1)
    assert sum(p.numel() for p in net.parameters()) == _classic_unet_params(3) == 31_037_633
    grey = create("unet-classic", in_channels=1, out_channels=1)
    assert sum(p.numel() for p in grey.parameters()) == _classic_unet_params(1)
    assert [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout2d)] == [0.1]  # the bottleneck only
    with torch.no_grad():
        assert net.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 64, 64)


def test_full_size_duat_follows_the_official_code():
    wrapped = P.DuATNet()
    net = wrapped.duat
    encoder = sum(p.numel() for p in net.backbone.parameters())
    assert round((encoder + 512 * 1000 + 1000) / 1e6, 2) == 25.36  # timm's pvt_v2_b2 with its ImageNet head
    assert sum(p.numel() for p in net.parameters()) == 24_968_265
    assert {"GLSA_c2.local.conv7.0.weight", "GLSA_c4.GlobelBlock.conv_mask.weight", "SBA.fc1.weight",
            "backbone.block3.5.attn.sr.weight"} <= set(net.state_dict())  # the official key names
    with torch.no_grad():
        coarse, sba = net.eval()(torch.zeros(1, 3, 64, 64))
        assert coarse.shape == sba.shape == (1, 1, 64, 64)
        assert wrapped.eval()(torch.zeros(2, 1, 64, 64)).shape == (2, 1, 64, 64)  # grey → RGB; eval: the sum
    assert isinstance(wrapped.train()(torch.zeros(2, 3, 64, 64)), tuple)  # training: both maps


def test_encoder_checkpoint_loads_only_through_the_safe_loader(tmp_path):
    from medrun.models.duat import PVTv2

    src = PVTv2()
    state = {**src.state_dict(), "head.weight": torch.zeros(1000, 512), "head.bias": torch.zeros(1000)}
    torch.save(state, tmp_path / "pvt_v2_b2.pth")  # a plain state dict, as the PVT release ships
    net = P.DuATNet()
    assert P.load_encoder(net, str(tmp_path / "pvt_v2_b2.pth")) == len(src.state_dict())
    assert torch.equal(net.duat.backbone.block4[2].mlp.fc2.weight, src.block4[2].mlp.fc2.weight)
    with pytest.raises(EnvError, match="encoder_checkpoint not found"):
        P.load_encoder(net, str(tmp_path / "missing.pth"))


def test_ignored_pixels_carry_zero_gradient_and_the_loss_is_bce_plus_dice():
    from monai.losses import DiceLoss

    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(2, 1, 9, 11, generator=g) * 2).requires_grad_()
    dense = (torch.rand(2, 1, 9, 11, generator=g) > 0.6).float()
    target = dense.clone()
    ignore = torch.rand(2, 1, 9, 11, generator=g) > 0.7
    target[ignore] = 255
    loss, parts = P.masked_loss(logits, target)
    loss.backward()
    assert torch.all(logits.grad[ignore] == 0) and torch.all(logits.grad[~ignore] != 0)
    # reference: BCE over the labelled pixels only; Dice with the ignored pixels removed from both sides
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits[~ignore], dense[~ignore])
    assert parts["bce"].item() == pytest.approx(bce.item(), rel=1e-6)
    p = torch.sigmoid(logits.detach()) * ~ignore
    t = dense * ~ignore
    soft = (2 * (p * t).sum((1, 2, 3)) + 1) / (p.sum((1, 2, 3)) + t.sum((1, 2, 3)) + 1)
    assert parts["dice"].item() == pytest.approx(1 - soft.mean().item(), rel=1e-6)
    # without ignored pixels: exactly BCE + MONAI's soft Dice loss (smooth 1, per image)
    full, _ = P.masked_loss(logits.detach(), dense)
    ref = torch.nn.functional.binary_cross_entropy_with_logits(logits.detach(), dense) + DiceLoss(
        sigmoid=True, smooth_nr=1.0, smooth_dr=1.0, batch=False)(logits.detach(), dense)
    assert full.item() == pytest.approx(ref.item(), rel=1e-5)


def test_sparse_labels_follow_superpixel_purity():
    seg = np.repeat(np.repeat(np.arange(9).reshape(3, 3), 4, 0), 4, 1)  # 3×3 blocks of 4×4 pixels
    gt = np.zeros((12, 12), np.uint8)
    gt[4:8, 4:8] = 1  # block 4 wholly inside
    gt[4:8, 8] = 1  # one column of block 5: mixed
    lab = M.sparse_labels(seg, gt)
    assert (lab[seg == 4] == 1).all() and (lab[seg == 5] == M.IGNORE).all()
    assert (lab[(seg != 4) & (seg != 5)] == 0).all()
    gt[4:8, 9:12] = 1  # block 5 now 16/16 - 0 → 16 of 16 → pure: type a
    assert (M.sparse_labels(seg, gt)[seg == 5] == 1).all()
    gt[4, 9] = 0  # 15/16 = 0.94: a gap unless the purity tolerance allows it
    assert (M.sparse_labels(seg, gt)[seg == 5] == M.IGNORE).all()
    assert (M.sparse_labels(seg, gt, purity_tol=0.1)[seg == 5] == 1).all()


def _brute_dist_fill(lab):
    fg, bg = np.argwhere(lab == 1), np.argwhere(lab == 0)
    out = np.where(lab == M.IGNORE, 0, lab)
    for y, x in np.argwhere(lab == M.IGNORE):
        d_f = np.sqrt(((fg - (y, x)) ** 2).sum(1)).min()
        d_b = np.sqrt(((bg - (y, x)) ** 2).sum(1)).min()
        out[y, x] = 1 if d_f < d_b else 0
    return out


def test_dist_fill_equals_brute_force_and_identity_holds():
    rng = np.random.default_rng(3)
    for _ in range(5):
        lab = rng.choice([0, 1, M.IGNORE], size=(17, 13), p=[0.3, 0.2, 0.5]).astype(np.uint8)
        filled = M.fill(lab, "dist")
        assert np.array_equal(filled, _brute_dist_fill(lab))
        gt = rng.integers(0, 2, lab.shape)
        s = M.gap_stats(lab, filled, gt)
        assert s["N"] == s["M"] + s["E_f"] + s["E_b"] == int((lab == M.IGNORE).sum())
    tie = np.array([[1, M.IGNORE, 0]], np.uint8)
    assert M.fill(tie, "dist").tolist() == [[1, 0, 0]]  # tie → background


def test_fills_with_one_seed_class_and_the_random_walker():
    only_bg = np.array([[0, M.IGNORE], [M.IGNORE, 0]], np.uint8)
    only_fg = np.where(only_bg == 0, 1, only_bg).astype(np.uint8)
    for how in ("dist", "rw"):
        assert M.fill(only_bg, how, np.zeros((2, 2))).max() == 0
        assert M.fill(only_fg, how, np.zeros((2, 2))).min() == 1
    assert M.fill(only_bg, "nofill").tolist() == only_bg.tolist()
    # a bright disk: the walker follows the edge, seeds inside and outside with a wide gap between
    yy, xx = np.mgrid[:32, :32]
    r = np.hypot(yy - 16, xx - 16)
    img = (r < 9).astype(float)
    lab = np.full((32, 32), M.IGNORE, np.uint8)
    lab[r < 4] = 1
    lab[r > 14] = 0
    assert np.array_equal(M.fill(lab, "rw", img), (r < 9).astype(np.uint8))


def test_superpixel_methods():
    from medrun.datasets.isic2018 import synthetic_lesion

    img, gt = synthetic_lesion(np.random.default_rng(0), 64)
    p = M.Params(n_segments=50, snic_impl="watershed")
    for meth in ("slic", "snic"):
        seg = M.superpixels(img, meth, p)
        k = seg.max() + 1
        assert seg.shape == (64, 64) and 15 <= k <= 100 and set(np.unique(seg)) == set(range(k)), (meth, k)
        assert M.superpixels(img[..., 0], meth, p).max() + 1 >= 15  # grey input
    if M.seeds_available():
        assert M.superpixels(img, "seeds", p).max() + 1 >= 10
    else:
        with pytest.raises(EnvError, match="opencv-contrib-python-headless"):
            M.superpixels(img, "seeds", p)


# -- through the CLI ----------------------------------------------------------------------------------------------
def test_learns_on_dist_fill_labels_within_reach_of_the_original_gt(cli, runs):
    """The card's smoke check on the fixture, as ``table1`` with one fill: a gap-stats child (N = M + E_f + E_b on
    every image, Dist_fill M/N ≥ 0.7), a U-Net (8 base channels, 10 epochs) on the original GT and one on Dist_fill
    labels of SLIC superpixels: test Dice ≥ 0.7 against the original GT (all-foreground scores about 0.27) and
    within 0.1 of the original-GT model. Then ``eval`` finds the Dist_fill child (the manifest's default labels)."""
    args = ["--dataset", "isic2018", "--fixture", "--runs-dir", runs, "-o", "eval.overlays=1"]
    r = cli("table1", "superpixel-label", *args, "-o", "table1.fills=[dist]", "--json")
    assert r.code == 0, r.err
    m = r.json()["metrics"]
    assert m["identity_violations"] == 0 and m["slic_dist_m_over_n"] >= 0.7, m
    assert m["dice_dist_slic"] >= 0.7 and m["dice_absdiff_dist_slic"] <= 0.1, m
    run = runs / "superpixel-label" / f"table1-{r.json()['run_id'][:12]}"
    paper = (run / "paper.md").read_text()
    assert "0.8524" in paper and "0.8568" in paper and "generated fixture" in paper  # the paper's U-Net rows
    assert (run / "figures" / "table1_dice.png").exists() and len((run / "table1.csv").read_text().splitlines()) == 3
    children = {c["name"]: runs.parent / c["run_dir"] for c in json.loads((run / "run.json").read_text())["children"]}
    assert list(children) == ["gap-stats", "original", "dist-slic"]
    gap = children["gap-stats"]
    assert "87.22%" in (gap / "paper.md").read_text() and (gap / "figures" / "gap_stats.png").exists()
    rows = (gap / "per_case.csv").read_text().splitlines()
    assert rows[0].startswith("case,method,fill,N,M,E_f,E_b,M_over_N,identity_holds") and len(rows) == 1 + 14 * 2
    dist = children["dist-slic"]
    assert (dist / "checkpoints" / "model.safetensors").exists() and (dist / "figures" / "learning_curves.png").exists()
    ev = cli("eval", "superpixel-label", *args, "--json")
    assert ev.code == 0 and ev.json()["metrics"]["dice"] == pytest.approx(m["dice_dist_slic"], abs=1e-6), ev.err
    assert "0.8568" in (runs / "superpixel-label" / f"eval-{ev.json()['run_id'][:12]}" / "paper.md").read_text()


def test_annotate_writes_pseudo_ground_truth(cli, runs):
    a = cli("annotate", "superpixel-label", "--dataset", "isic2018", "--fixture", "--runs-dir", runs,
            "-o", "annotate.methods=[slic]", "-o", "annotate.fills=[nofill, dist]", "-o", "annotate.figures=1",
            "--json")
    assert a.code == 0, a.err
    run = runs / "superpixel-label" / f"annotate-{a.json()['run_id'][:12]}"
    nofill = sorted((run / "pseudo" / "slic" / "nofill").glob("*.png"))
    dist = sorted((run / "pseudo" / "slic" / "dist").glob("*.png"))
    assert len(nofill) == len(dist) == a.json()["metrics"]["n_images"] == 19  # train + val of 24
    gap = np.asarray(Image.open(nofill[0]))
    filled = np.asarray(Image.open(dist[0]))
    assert set(np.unique(gap)) == {0, 1, 255} and set(np.unique(filled)) == {0, 1}
    assert np.array_equal(filled[gap != 255], gap[gap != 255])  # the fill changes only the gap
    assert len(list((run / "figures" / "fills").glob("*.png"))) == 1
    assert len((run / "per_case.csv").read_text().splitlines()) == 1 + 19


# -- bad input ----------------------------------------------------------------------------------------------------
@pytest.fixture
def isic(tmp_path):
    from medrun.datasets import get

    return get("isic2018").make_fixture(tmp_path / "d", 0)


def _nothing_complete(runs, r=None):
    """No run of the pipeline looks complete; the error (when given) is one line, no traceback."""
    for run in (runs / "superpixel-label").iterdir() if (runs / "superpixel-label").exists() else ():
        assert not (run / "MANIFEST.sha256").exists(), run
    if r is not None:
        errors = [line for line in r.err.splitlines() if line.startswith("error")]
        assert len(errors) == 1 and "Traceback" not in r.err, r.err


def test_mask_of_other_size_than_its_image_is_a_data_error(cli, runs, isic):
    mask = isic / "ISIC2018_Task1_Training_GroundTruth" / "ISIC_0000003_segmentation.png"
    Image.open(mask).resize((50, 40), Image.NEAREST).save(mask)
    r = cli("gap-stats", "superpixel-label", "--dataset", "isic2018", "--data-dir", isic, "--runs-dir", runs,
            "-o", "dataset.split=random", "-o", "gap_stats.methods=[slic]")
    assert r.code == 3 and "ISIC_0000003_segmentation.png" in r.err and "50×40" in r.err, r.err
    _nothing_complete(runs, r)


def test_busi_mask_of_other_size_is_a_data_error(cli, runs, tmp_path):
    from medrun.datasets import get

    root = get("busi").make_fixture(tmp_path / "b", 0)
    mask = root / "benign" / "benign (3)_mask_1.png"  # the second mask of a split lesion
    Image.open(mask).resize((30, 30)).save(mask)
    r = cli("annotate", "superpixel-label", "--dataset", "busi", "--data-dir", root, "--runs-dir", runs)
    assert r.code == 3 and "benign (3)_mask_1.png" in r.err, r.err
    _nothing_complete(runs, r)


def test_official_split_without_test_set_and_wrong_folder(cli, runs, isic):
    r = cli("train", "superpixel-label", "--dataset", "isic2018", "--data-dir", isic, "--runs-dir", runs)
    assert r.code == 3 and "ISIC2018_Task1-2_Test_Input" in r.err and "dataset.split=random" in r.err, r.err
    wrong = cli("train", "superpixel-label", "--dataset", "cxr", "--data-dir", isic, "--runs-dir", runs)
    assert wrong.code == 3 and "CXR_png" in wrong.err, wrong.err
    _nothing_complete(runs, r)
    _nothing_complete(runs, wrong)


def test_missing_encoder_checkpoint_is_an_environment_error(cli, runs):
    r = cli("train", "superpixel-label", "--dataset", "isic2018", "--fixture", "--runs-dir", runs,
            "-o", "model.net=duat", "-o", "model.encoder_checkpoint=/nowhere/pvt_v2_b2.pth")
    assert r.code == 4 and "/nowhere/pvt_v2_b2.pth" in r.err, r.err
    _nothing_complete(runs, r)


def test_official_split_is_isic_only_and_seeds_needs_contrib(cli, runs):
    r = cli("train", "superpixel-label", "--dataset", "busi", "--fixture", "--runs-dir", runs,
            "-o", "dataset.split=official")
    assert r.code == 2 and "official" in r.err, r.err
    if not M.seeds_available():
        s = cli("gap-stats", "superpixel-label", "--dataset", "isic2018", "--fixture", "--runs-dir", runs,
                "-o", "gap_stats.methods=[seeds]")
        assert s.code == 4 and "opencv-contrib-python-headless" in s.err, s.err
        _nothing_complete(runs, s)
    _nothing_complete(runs, r)
