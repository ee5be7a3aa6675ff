"""mcgan: the paper's networks at full size, the tissue-weighted KL against scipy, the multi-Otsu fallback,
learning on the family fixture through the CLI (DA → I2I → KL against both controls), and bad input."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from medrun.models.cyclegan import PatchDiscriminator, ResnetGenerator
from medrun.models.mcgan import AttentionGate, AttentionUNet, VGG16Features


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def n_params(net):
    return sum(p.numel() for p in net.parameters())


def test_full_size_networks():
    """G3 at the released code's widths (64…1024): 34,877,421 parameters, the widely used AttU_Net's 34,878,573
    less the 2×64×9 weights of two missing input channels; the DA generator (ngf 64, 9 blocks) and the PatchGANs."""
    g3 = AttentionUNet(1, 1, (64, 128, 256, 512, 1024))
    assert n_params(g3) == 34_877_421
    y, alphas = g3.eval()(torch.zeros(1, 1, 64, 64), return_attention=True)
    assert y.shape == (1, 1, 64, 64) and [a.shape[-1] for a in alphas] == [8, 16, 32, 64]
    g1 = ResnetGenerator(1, 1, 64, 9)
    assert n_params(g1) == 11_365_633 and g1(torch.zeros(1, 1, 64, 64)).shape == (1, 1, 64, 64)
    assert n_params(PatchDiscriminator(1, 64)) == 2_762_689 and n_params(PatchDiscriminator(2, 64)) == 2_763_713
    assert n_params(VGG16Features()) == 260_160  # torchvision vgg16 features[0:9]


def test_attention_gate_scales_the_skip_by_alpha():
    gate = AttentionGate(8, 8, 4).eval()
    g, x = torch.randn(2, 8, 16, 16), torch.randn(2, 8, 16, 16)
    out, alpha = gate(g, x)
    assert alpha.shape == (2, 1, 16, 16) and float(alpha.min()) >= 0 and float(alpha.max()) <= 1
    torch.testing.assert_close(out, x * alpha)


def test_attention_maps_report_the_finest_gate_as_fig6():
    """Fig. 6 shows the released AttU_Net's ``attention_map``, the finest gate's α on the input grid, not a mean
    over gates (which the attention statistics once reported); the nearest-upsampled mean is kept beside it."""
    from medrun.models.mcgan import attention_maps

    coarse, fine = torch.full((2, 1, 4, 4), 0.8), torch.rand(2, 1, 8, 8)
    finest, mean = attention_maps([coarse, fine], (8, 8))
    torch.testing.assert_close(finest, fine[:, 0])
    torch.testing.assert_close(mean, (0.8 + fine[:, 0]) / 2)


def test_gate_batchnorm_keeps_alpha_off_zero_on_a_constant_background():
    """Why the smoke cannot check "α ≈ 0 outside the head": the gate's BN on ψ (Eq. 6 as released) standardises
    the logits over the batch, so a constant background covering a fraction p of the pixels has a logit of at
    least β − γ·√((1 − p)/p). With γ = 1, β = 0 (the start, and where ~150 Adam steps leave them) that is
    α ≥ σ(−√((1 − p)/p)): 0.31 for the 64² fixture's background (p ≈ 0.62), whatever the convolutions' weights
    and biases (ψ's bias b_ψ = −10 would close an un-normalised gate; the BN subtracts it)."""
    p = 10 / 16
    bound = float(torch.sigmoid(torch.tensor(-((1 - p) / p) ** 0.5)))
    bg = torch.zeros(16, 16, dtype=torch.bool)
    bg[:, :10] = True
    for seed in range(5):
        torch.manual_seed(seed)
        gate = AttentionGate(4, 4, 2).train()
        for m in gate.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.normal_(m.weight, 0, 3)
        torch.nn.init.constant_(gate.psi[0].bias, -10.0)
        g, x = torch.randn(2, 4, 16, 16), torch.randn(2, 4, 16, 16)
        g[..., bg], x[..., bg] = torch.randn(4, 1), torch.randn(4, 1)
        alpha = gate(g, x)[1][:, 0]
        assert float(alpha[:, bg].min()) >= bound - 1e-5, seed


def test_kl_of_identical_histograms_is_zero_and_matches_scipy():
    from scipy.stats import entropy

    from medrun.metrics.synthesis import histogram, kl_divergence, tissue_kl, tissue_weights

    rng = np.random.default_rng(0)
    a, b = rng.beta(2, 5, 5000), rng.beta(5, 2, 5000)
    pa, pb = histogram(a), histogram(b)
    assert pa.shape == (256,) and abs(pa.sum() - 1) < 1e-12
    assert kl_divergence(pa, pa) == pytest.approx(0.0, abs=1e-12)
    assert kl_divergence(pa, pb) == pytest.approx(entropy(pa + 1e-10, pb + 1e-10), rel=1e-9)
    w = tissue_weights({"csf": 120, "gm": 500, "wm": 380})
    assert sum(w.values()) == pytest.approx(1.0) and w["gm"] == pytest.approx(0.5)
    same = tissue_kl({"csf": a, "gm": b, "wm": a}, {"csf": a, "gm": b, "wm": a}, w)
    assert same["kl_average"] == pytest.approx(0.0, abs=1e-9)
    diff = tissue_kl({"csf": a, "gm": a, "wm": a}, {"csf": b, "gm": a, "wm": a}, w)
    assert diff["kl_average"] == pytest.approx(w["csf"] * diff["kl_csf"])


def test_multi_otsu_fallback_recovers_the_fixture_tissues(tmp_path):
    from medrun.datasets import brain_mr
    from medrun.pipelines.mcgan.pipeline import otsu_tissue, pad_crop

    roots = brain_mr.write_family(tmp_path, 0, n_subjects=1)
    s = brain_mr.read("ixi", roots["ixi"])[0]
    vols, seg = brain_mr.load_subject(s, ["t1"])
    lab = otsu_tissue(vols["t1"])
    brain = seg > 0
    assert (lab[brain] == seg[brain]).mean() > 0.9 and (lab[~brain] == 0).mean() > 0.99
    assert pad_crop(np.ones((3, 50, 70)), 64).shape == (3, 64, 64)


SMALL = ["-o", "dataset.size=32", "-o", "dataset.max_subjects=4", "-o", "dataset.test_fraction=0.25",
         "-o", "model.ngf=8", "-o", "model.n_blocks=1", "-o", "model.ndf=8", "-o", "model.channels=[8,16,32,64]",
         "-o", "train_da.epochs=2", "-o", "train_i2i.epochs=3", "-o", "train_da.lr=0.001", "-o", "train_i2i.lr=0.002"]


@pytest.mark.slow
def test_learns_mcgan_beats_both_controls_on_the_fixture(cli, runs):
    """DA and I2I at a tiny size on 4 subjects per dataset: both L1s fall, and the recipient's KL_average of MCGAN
    is below copying the T1 and below the same I2I without DA (the card's smoke criteria)."""
    args = ["mcgan", "--dataset", "hcp", "--fixture", "--runs-dir", runs, *SMALL, "--json"]
    r = cli("train-i2i", *args)
    assert r.code == 0, r.err
    m = r.json()["metrics"]
    assert m["i2i_l1_drop"] > 0.05 and m["use_da"] and m["faithful"] is False and m["lambda_vgg_used"] == 0
    run = runs / "mcgan" / f"train-i2i-{r.json()['run_id'][:12]}"
    info = json.loads((run / "run.json").read_text())
    assert info["faithful"] is False and len(info["children"]) == 1  # the train-da child
    assert "Not faithful" in (run / "paper.md").read_text()
    for f in ("checkpoints/g3.safetensors", "checkpoints/model.safetensors", "figures/learning_curves.png"):
        assert (run / f).exists(), f
    ev = cli("kl-eval", *args)
    assert ev.code == 0, ev.err
    k = ev.json()["metrics"]
    assert k["cycle_l1_drop"] > 0 and k["i2i_l1_drop"] > 0.05
    assert k["kl_average"] < k["kl_average_copy_t1"] and k["kl_average"] < k["kl_average_no_da"], k
    assert sum(k[f"lambda_{t}"] for t in ("csf", "gm", "wm")) == pytest.approx(1.0)
    kdir = runs / "mcgan" / f"kl-eval-{ev.json()['run_id'][:12]}"
    paper = (kdir / "paper.md").read_text()
    assert "0.1056" in paper and "Not faithful" in paper and "not comparable" in paper
    rows = (kdir / "per_case.csv").read_text().splitlines()
    assert rows[0].startswith("subject,slices,kl_average_mcgan") and len(rows) == 2
    assert (kdir / "figures" / "tissue_histograms.png").exists() and (kdir / "figures" / "synthesized.png").exists()


def _copy_fixture(tmp_path):
    from medrun.datasets import brain_mr

    return brain_mr.write_family(tmp_path / "data", 0, n_subjects=3)


def _no_complete_run(runs):
    return not list((runs / "mcgan").glob("*/MANIFEST.sha256")) if (runs / "mcgan").exists() else True


def test_contrasts_of_another_shape_exit_3_naming_the_file(cli, runs, tmp_path):
    roots = _copy_fixture(tmp_path)
    bad = next((roots["ixi"] / "IXI-PD").glob("*-PD.nii.gz"))
    nib.save(nib.Nifti1Image(np.ones((64, 60, 32), np.int16), np.eye(4)), str(bad))
    r = cli("slice", "mcgan", "--dataset", "hcp", "--data-dir", roots["hcp"], "--runs-dir", runs, *SMALL)
    assert r.code == 3 and bad.name in r.err and "register every contrast" in r.err, r.err
    assert _no_complete_run(runs)


def test_missing_donor_folder_and_bad_roles(cli, runs, tmp_path):
    roots = _copy_fixture(tmp_path)
    r = cli("slice", "mcgan", "--dataset", "hcp", "--data-dir", roots["hcp"], "--runs-dir", runs,
            "-o", f"dataset.donor_root={tmp_path / 'nowhere'}")
    assert r.code == 3 and "nowhere" in r.err, r.err
    r = cli("slice", "mcgan", "--dataset", "hcp", "--data-dir", roots["hcp"], "--runs-dir", runs,
            "-o", "dataset.donor=hcp")
    assert r.code == 2 and "both hcp" in r.err, r.err
    r = cli("slice", "mcgan", "--dataset", "hcp", "--data-dir", roots["hcp"], "--runs-dir", runs,
            "-o", "dataset.contrast=dwi")
    assert r.code == 2 and "has no dwi" in r.err, r.err
    assert _no_complete_run(runs)


def test_missing_vgg_weights_exit_4(cli, runs, tmp_path):
    roots = _copy_fixture(tmp_path)
    r = cli("train-i2i", "mcgan", "--dataset", "hcp", "--data-dir", roots["hcp"], "--runs-dir", runs, *SMALL,
            "-o", "train_i2i.use_da=false", "-o", f"train_i2i.vgg_weights={tmp_path / 'vgg16.pth'}")
    assert r.code == 4 and "vgg16.pth" in r.err and "torchvision VGG16" in r.err, r.err
    assert _no_complete_run(runs)


def test_vgg_weights_load_from_a_torchvision_state_dict(tmp_path):
    """λ_vgg is used only with weights: a torchvision-keyed VGG16 state dict (extra classifier keys ignored) loads;
    none given gives λ_vgg 0; a file without the features refuses with exit 2."""
    from types import SimpleNamespace

    from safetensors.torch import save_file

    from medrun.errors import UsageError
    from medrun.pipelines.mcgan.i2i import vgg

    state = {k: torch.randn_like(v) for k, v in VGG16Features().state_dict().items()}
    save_file({**state, "classifier.0.weight": torch.zeros(4, 4)}, str(tmp_path / "vgg16.safetensors"))
    logs = []

    def pipe(weights):
        cfg = SimpleNamespace(lambda_vgg=100.0, vgg_weights=weights)
        return SimpleNamespace(m=SimpleNamespace(train_i2i=cfg), ctx=SimpleNamespace(log=logs.append))

    net, lam = vgg(pipe(str(tmp_path / "vgg16.safetensors")))
    assert lam == 100.0 and torch.equal(net.features[0].weight, state["features.0.weight"])
    assert vgg(pipe(None)) == (None, 0.0) and "NOT faithful" in logs[-1]
    save_file({"features.0.weight": torch.zeros(64, 3, 3, 3)}, str(tmp_path / "partial.safetensors"))
    with pytest.raises(UsageError, match="lacks VGG16 features"):
        vgg(pipe(str(tmp_path / "partial.safetensors")))
