"""pulmonary-av: EA-U-Net and the prior-net at full size, the enhanced gate against its formula, the geometry of
Stage 1a and ASE (skeleton nodes, angle, frustum, bridging, relabelling) on small synthetic volumes, learning on the
fixture through the CLI (prior-net child, EA-U-Net, refine with the gap check), and bad input."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from medrun.models.ea_unet import EAUNet, EnhancedGate
from medrun.pipelines.pulmonary_av import geometry as G


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def n_params(net):
    return sum(p.numel() for p in net.parameters())


def _block(cin, cout):  # 2 × [conv 3³ + bias, InstanceNorm (affine)]
    return cin * 27 * cout + cout + 2 * cout + cout * 27 * cout + cout + 2 * cout


def _gate(c, out):  # three 1³ projections to c/2 with BN, ψ to `out` with BN
    f = c // 2
    return 3 * (c * f + f + 2 * f) + f * out + out + 2 * out


def test_ea_unet_full_size_shapes_and_parameter_count():
    """The card's widths (32, 64, 128, 256): parameters by hand (the paper states none), three gates, output
    (B, 3, …) on an input whose last side (20) is not a multiple of 8, as the paper's 76 slices."""
    ch = (32, 64, 128, 256)
    expect = sum(_block(a, b) for a, b in zip((1, *ch[:-1]), ch, strict=True))  # CT encoder
    expect += sum(_block(a, b) for a, b in zip((1, *ch[:-2]), ch[:-1], strict=True))  # prior encoder (one level fewer)
    expect += sum(ch[i + 1] * 27 * ch[i] + ch[i] for i in range(3))  # up convolutions
    expect += sum(_gate(c, 1) + _block(2 * c, c) for c in ch[:-1]) + ch[0] * 3 + 3  # gates, decoder, head
    net = EAUNet(1, 1, 3, ch).eval()
    print(f"\nEA-U-Net parameters: {n_params(net):,}")
    assert n_params(net) == expect
    assert len(net.gates) == 3
    with torch.no_grad():
        out = net(torch.randn(1, 2, 48, 40, 20))
    assert out.shape == (1, 3, 48, 40, 20)
    per = EAUNet(1, 1, 3, ch, gate="per-channel")
    assert n_params(per) - n_params(net) == sum(_gate(c, c) - _gate(c, 1) for c in ch[:-1])


def test_prior_net_full_size():
    from medrun.pipelines.pulmonary_av.pipeline import PriorNet

    net = PriorNet((32, 64, 128, 256)).eval()
    print(f"\nprior-net (MONAI AttentionUnet) parameters: {n_params(net):,}")
    with torch.no_grad():
        assert net(torch.randn(1, 1, 16, 16, 12)).shape == (1, 1, 16, 16, 12)  # 12: padded to 16, cropped


def test_enhanced_gate_is_its_formula():
    torch.manual_seed(0)
    g = EnhancedGate(8).eval()
    x, q, r = (torch.randn(2, 8, 4, 4, 4) for _ in range(3))
    a = torch.sigmoid(g.psi(torch.relu(g.w_x(x) + g.w_g(q) + g.w_r(r))))
    assert a.shape == (2, 1, 4, 4, 4)
    assert torch.allclose(g(x, q, r), a * x)


def tube(shape, a, b, r):
    grid = np.stack(np.meshgrid(*map(np.arange, shape), indexing="ij"), -1).astype(float)
    a, b = np.asarray(a, float), np.asarray(b, float)
    t = np.clip(((grid - a) @ (b - a)) / ((b - a) @ (b - a)), 0, 1)
    return np.linalg.norm(grid - a - t[..., None] * (b - a), axis=-1) <= r


def test_skeleton_nodes_and_terminals():
    straight = tube((40, 20, 20), (4, 10, 10), (35, 10, 10), 2.5)
    assert G.terminals(straight) == 2
    y = straight | tube((40, 20, 20), (20, 10, 10), (34, 18, 10), 2)
    nd = G.nodes(y)
    assert len(nd.endpoints) == 3 and len(nd.centroids) == 1 and G.terminals(y) == 3


def test_angle_and_frustum():
    assert G.angle_deg([0, 0, 0], [-5, 0, 0], [3, 0, 0]) == pytest.approx(0)
    assert G.angle_deg([0, 0, 0], [-5, 0, 0], [0, 3, 0]) == pytest.approx(90)
    box, inside = G.frustum((30, 20, 20), np.array([20, 10, 10]), np.array([10, 10, 10]), 3.0, 1.0, (1, 1, 1))
    full = np.zeros((30, 20, 20), bool)
    full[box] = inside
    assert full[10, 10, 10] and full[20, 10, 10] and full[20, 13, 10] and not full[10, 12, 10]
    assert full[15, 12, 10] and not full[15, 13, 10]  # radius 1 + ½(3 − 1) = 2 mid-way
    assert not full[9, 10, 10] and not full[21, 10, 10]


def test_ase_bridges_a_broken_tube_and_relabels_a_stray_piece():
    shape = (48, 20, 20)
    gt = tube(shape, (3, 10, 10), (44, 10, 10), 2.5).astype(np.uint8)
    seg = gt.copy()
    seg[20:25] = 0  # a 5-voxel gap
    prior = gt > 0
    out, rep = G.ase(seg, prior, (1.0, 1.0, 1.0))
    assert G.terminals(seg) - G.terminals(out) == 2 and len(rep.pairs) == 1
    assert (out[20:25][gt[20:25] > 0] == 1).all() and np.array_equal(out > 0, gt > 0)
    far = G.ase(seg, prior, (1.0, 1.0, 1.0), d_max=4.0)[1]  # beyond the largest bridged gap
    assert far.filled == 0
    # a PV piece touching the PA trunk but not the PV trunk becomes PA
    lab = np.zeros((40, 30, 20), np.uint8)
    lab[tube(lab.shape, (2, 5, 10), (37, 5, 10), 2.5)] = 1
    lab[tube(lab.shape, (2, 24, 10), (37, 24, 10), 2.5)] = 2
    stray = tube(lab.shape, (20, 8, 10), (20, 12, 10), 1.5) & (lab == 0)
    lab[stray] = 2
    fixed = G.classification_refinement(lab)
    assert (fixed[stray] == 1).all() and (fixed[lab == 1] == 1).all() and (fixed[(lab == 2) & ~stray] == 2).all()


def test_prior_in_on_a_fixture_case(tmp_path):
    from medrun.datasets import pulmonary_av as D

    root = D.fixture(tmp_path / "d", 0, n=1)
    v = D.load(D.read(root)[0], 1024)
    target = (v.label > 0) & v.lung
    mesh = G.prior_in(v.hu, v.lung, v.spacing)
    fast = G.prior_in(v.hu, v.lung, v.spacing, fast_threshold=True)
    axial = G.prior_in(v.hu, v.lung, v.spacing, axes=(2,))
    rec = lambda p: (p & target).sum() / target.sum()  # noqa: E731
    assert rec(mesh) > 0.9 and rec(fast) > 0.95 and rec(axial) < rec(mesh)
    assert (mesh & ~v.lung).sum() == 0 and (mesh & target).sum() / mesh.sum() > 0.9


SMALL = ["-o", "model.channels=[4,8,16,32]", "-o", "model.prior_channels=[4,8,16]", "-o", "train.patch=[32,32,24]",
         "-o", "train.prior_epochs=1", "-o", "train.prior_patches_per_epoch=4", "-o", "train.epochs=4",
         "-o", "train.patches_per_epoch=30", "-o", "train.lr=0.002", "-o", "train.val_patches=2"]


@pytest.mark.slow
def test_learns_on_fixture_prior_eaunet_and_ase_gap(cli, runs):
    """The fixture through the CLI at a small size: the prior-net is a child run, EA-U-Net's held-out mean PA/PV
    Dice beats chance (the classes' voxel frequency, ≈ 0.006) many times over; refine fills the gap case's break
    with PA, drops its terminal count by 2 and does not lower its Dice; count-terminals counts the labels."""
    common = ["--dataset", "pulmonary_av", "--fixture", "--runs-dir", runs, *SMALL]
    r = cli("train", "pulmonary-av", *common, "--json")
    assert r.code == 0, r.err
    m = r.json()["metrics"]
    assert m["dice"] > 10 * m["chance_dice"] and m["dice"] > 0.1, m
    run = runs / "pulmonary-av" / f"train-{r.json()['run_id'][:12]}"
    for f in ("per_case.csv", "paper.md", "checkpoints/model.safetensors", "checkpoints/prior_net.safetensors",
              "figures/learning_curves.png", "MANIFEST.sha256"):
        assert (run / f).exists(), f
    assert "Table 1" in (run / "paper.md").read_text() and "not comparable" in (run / "paper.md").read_text()
    assert len(json.loads((run / "run.json").read_text()).get("children", [])) == 1  # the prior-net

    ref = cli("refine", "pulmonary-av", *common, "--json")
    assert ref.code == 0, ref.err
    g = ref.json()["metrics"]
    assert g["ase_terminal_drop"] == 2 and g["gap_fill_pa"] > 0.9 and g["gap_dice_gain"] >= 0, g
    assert g["prior_recall_in"] > 0.8 and g["dice"] == pytest.approx(m["dice"])
    rdir = runs / "pulmonary-av" / f"refine-{ref.json()['run_id'][:12]}"
    assert (rdir / "figures" / "gap_pav_gap.png").exists() and list((rdir / "refined").glob("*.nii.gz"))

    cnt = cli("count-terminals", "pulmonary-av", *common, "--json")
    assert cnt.code == 0, cnt.err
    assert cnt.json()["metrics"]["n_cases"] == 7 and cnt.json()["metrics"]["terminals"] > 4


@pytest.fixture
def pav(tmp_path):
    from medrun.datasets import get

    return get("pulmonary_av").make_fixture(tmp_path / "d", 0)


def _not_complete(runs):
    base = runs / "pulmonary-av"
    for run in base.iterdir() if base.exists() else ():
        assert not (run / "MANIFEST.sha256").exists()


def _args(pav, runs):
    return ["--dataset", "pulmonary_av", "--data-dir", pav, "--runs-dir", runs, "-o", "dataset.stored_offset=1024",
            "-o", "dataset.folds=6", "-o", "dataset.val_cases=1", "-o", "prior.extrapulmonary=false",
            "-o", "train.patch=[32,32,24]"]


def test_label_values_outside_the_set_fail_the_run(cli, runs, pav):
    lab = pav / "labelsTr" / "pav_003.nii.gz"
    img = nib.load(str(lab))
    arr = np.asarray(img.dataobj).copy()
    arr[arr == 2] = 5
    nib.save(nib.Nifti1Image(arr, img.affine), str(lab))
    r = cli("prior", "pulmonary-av", *_args(pav, runs))
    assert r.code == 3 and str(lab) in r.err and "outside 0/1/2: 5" in r.err and "Traceback" not in r.err
    _not_complete(runs)


def test_mask_on_another_grid_is_refused(cli, runs, pav):
    lung = pav / "lungsTr" / "pav_002.nii.gz"
    img = nib.load(str(lung))
    aff = img.affine.copy()
    aff[2, 2] = 2.5
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), aff), str(lung))
    r = cli("prior", "pulmonary-av", *_args(pav, runs))
    assert r.code == 3 and str(lung) in r.err and "voxel size" in r.err and "refuses to resample" in r.err
    _not_complete(runs)


def test_patch_larger_than_the_volume_is_a_usage_error(cli, runs, pav):
    r = cli("prior", "pulmonary-av", *_args(pav, runs), "-o", "train.patch=[96,64,32]")
    assert r.code == 2 and "train.patch (96, 64, 32) is larger than" in r.err and "pav_001.nii.gz" in r.err
    _not_complete(runs)


def test_manifest_errors(cli, runs):
    bad = cli("prior", "pulmonary-av", "--dataset", "pulmonary_av", "--fixture", "--runs-dir", runs,
              "-o", "dataset.fold=6")
    assert bad.code == 2 and "dataset.fold 6 must be below dataset.folds 6" in bad.err
    gate = cli("train", "pulmonary-av", "--dataset", "pulmonary_av", "--fixture", "--runs-dir", runs,
               "-o", "model.gate=both")
    assert gate.code == 2 and "model.gate" in gate.err
