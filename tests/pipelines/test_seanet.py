"""seanet: SEANet / CTformer / SEANet² at full size (token grids 29 → 25 → 23), the SRU (shape, zero SRU =
CTformer exactly, LaMa's Fourier unit as reference), the card's metrics against scikit-image, learning on the
physics fixture, the extra stages on a finished run (denoise with HU preserved, spectral-map), and bad input."""

import json
import math

import numpy as np
import pytest
import torch

from medrun.models import seanet as S
from medrun.pipelines.seanet import pipeline as P


@pytest.fixture(autouse=True)
def _one_thread():
    """Two cores shared with other jobs: one intra-op thread is many times faster than two spinning ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _manifest(fixture=False, **over):
    from medrun.pipelines import get
    from medrun.pipelines.runner import Request, load_manifest

    m, _ = load_manifest(Request(pipeline="seanet", stage="train", dataset="mayo", fixture=fixture,
                                 overrides=[f"{k}={v}" for k, v in over.items()]), get("seanet"))
    return m


def n_params(net):
    return sum(p.numel() for p in net.parameters())


# -- the architecture at full size --------------------------------------------------------------------------------
def test_paper_preset_builds_with_the_cards_token_grids_and_runs_one_patch():
    m = _manifest()
    net = P.build_net(m.model, m.train.patch).eval()
    assert (net.g0, net.g1, net.g2) == (29, 25, 23)  # 841, 625, 529 tokens
    assert tuple(net.pos_embed.shape) == (1, 529, 64) and len(net.blocks) == 12 and net.blocks[0].heads == 8
    x = torch.rand(1, 1, 64, 64)
    t0 = net.soft_split0(x).transpose(1, 2)
    assert tuple(t0.shape) == (1, 841, 49)
    fm1 = torch.roll(net._to_map(net.attention1(t0), 29), (2, 2), (2, 3))
    assert tuple(net.soft_split1(fm1).transpose(1, 2).shape) == (1, 625, 576)
    out, feats = net(x, features=True)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert tuple(feats["global1"].shape) == (1, 45, 29, 29) and tuple(feats["global2"].shape) == (1, 45, 25, 25)
    # 3L7G on 64 channels: c_l 19, c_g 45, c_r 22, LFU on 5 channels (20 after folding the quadrants)
    sru = net.sru1.sru
    assert (sru.cl, sru.cg, sru.spectral.lfu_in) == (19, 45, 5) and sru.spectral.lfu.conv.in_channels == 2 * 20 + 2
    # parameter counts (the paper states none): recorded so a change to the architecture is seen
    assert n_params(net) == 1_775_531
    assert n_params(P.build_net(m.model.model_copy(update={"arch": "ctformer"}))) == 1_748_493
    assert n_params(P.build_net(m.model.model_copy(update={"arch": "redcnn"}))) == 1_848_865
    red2 = P.build_net(m.model.model_copy(update={"arch": "seanet2"}))
    assert n_params(red2) == 1_909_935 and (red2.sru2.sru.cl, red2.sru2.sru.cg) == (29, 67)
    assert red2.eval()(x).shape == x.shape


def test_ablation_dilations_follow_eq5_and_bad_presets_are_refused():
    for dil, grids in (([3, 1, 1, 3], (29, 23, 21)), ([3, 2, 2, 3], (29, 23, 19))):
        net = S.SEANet(token_dim=8, embed_dim=8, depth=1, num_heads=2, dilation=tuple(dil))
        assert (net.g0, net.g1, net.g2) == grids and net.eval()(torch.rand(1, 1, 64, 64)).shape == (1, 1, 64, 64)
    for fourier in ("encoder", "decoder", "both"):  # Table 2's Fourier E / D / E-D, and the 5L5G / 4L6G splits
        net = S.seanet(token_dim=8, embed_dim=8, depth=1, num_heads=2, fourier=fourier, sru_global=0.5)
        assert net.eval()(torch.rand(2, 1, 64, 64)).shape == (2, 1, 64, 64) and net.sru1.sru.cl == 4
    assert S.sru_channels(64, 0.6) == (26, 38) and S.sru_channels(96, 0.7) == (29, 67)
    from pydantic import ValidationError

    from medrun.pipelines.seanet.config import SeanetManifest

    base = _manifest().model_dump()
    with pytest.raises(ValidationError, match="not divisible by model.heads 12"):
        SeanetManifest(**{**base, "model": {**base["model"], "heads": 12}})
    with pytest.raises(ValidationError, match="must mirror the encoder"):
        SeanetManifest(**{**base, "model": {**base["model"], "dilation": [3, 1, 2, 3]}})


# -- the SRU ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels,side", [(64, 29), (64, 25), (96, 56), (16, 13)])
def test_sru_keeps_the_input_shape(channels, side):
    x = torch.randn(2, channels, side, side)
    assert S.SRU(channels).eval()(x).shape == x.shape
    assert S.SpectralSkip(channels)(x).shape == x.shape


def test_zero_initialised_sru_gives_ctformers_output_exactly():
    kw = dict(token_dim=16, embed_dim=16, depth=2, num_heads=4)
    torch.manual_seed(0)
    ctformer = S.ctformer(**kw).eval()
    seanet = S.seanet(**kw).eval()
    missing, unexpected = seanet.load_state_dict(ctformer.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith(("sru1.", "sru2.")) for k in missing)
    with torch.no_grad():
        for unit in (seanet.sru1, seanet.sru2):
            for p in unit.parameters():
                p.zero_()
    x = torch.rand(3, 1, 64, 64)
    assert torch.equal(seanet(x), ctformer(x))
    with torch.no_grad():
        seanet.sru2.linear.bias.fill_(0.1)  # and a non-zero SRU does change it
    assert not torch.equal(seanet(x), ctformer(x))


class LamaFourierUnit(torch.nn.Module):
    """LaMa's ``FourierUnit`` (saic-mdal/lama, ffc.py), spectral_pos_encoding=True, no resize: the reference."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv_layer = torch.nn.Conv2d(in_channels * 2 + 2, out_channels * 2, 1, bias=False)
        self.bn = torch.nn.BatchNorm2d(out_channels * 2)

    def forward(self, x):
        batch = x.shape[0]
        r_size = x.size()
        ffted = torch.fft.rfftn(x, dim=(-2, -1), norm="ortho")
        ffted = torch.stack((ffted.real, ffted.imag), dim=-1).permute(0, 1, 4, 2, 3).contiguous()
        ffted = ffted.view((batch, -1) + ffted.size()[3:])
        height, width = ffted.shape[-2:]
        vert = torch.linspace(0, 1, height)[None, None, :, None].expand(batch, 1, height, width)
        hor = torch.linspace(0, 1, width)[None, None, None, :].expand(batch, 1, height, width)
        ffted = torch.relu(self.bn(self.conv_layer(torch.cat((vert, hor, ffted), dim=1))))
        ffted = ffted.view((batch, -1, 2) + ffted.size()[2:]).permute(0, 1, 3, 4, 2).contiguous()
        return torch.fft.irfftn(torch.complex(ffted[..., 0], ffted[..., 1]), s=r_size[-2:], dim=(-2, -1), norm="ortho")


@pytest.mark.parametrize("side", [29, 26])
def test_fourier_unit_equals_lamas(side):
    torch.manual_seed(1)
    ours, ref = S.FourierUnit(5, 7), LamaFourierUnit(5, 7)
    ref.load_state_dict({k.replace("conv.", "conv_layer."): v for k, v in ours.state_dict().items()})
    x = torch.randn(2, 5, side, side)
    for mode in ("train", "eval"):
        getattr(ours, mode)(), getattr(ref, mode)()
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-6)


def test_performer_features_estimate_the_softmax_kernel():
    torch.manual_seed(0)
    unit = S.TokenPerformer(dim=8, in_dim=4, kernel_ratio=1.0)
    unit.m = 20000
    unit.w = torch.randn(unit.m, 4)  # i.i.d. features: an unbiased estimate of exp(xᵀy)
    x, y = torch.randn(1, 3, 4) * 0.5, torch.randn(1, 3, 4) * 0.5
    est = torch.einsum("btm,bsm->bts", unit.prm_exp(x), unit.prm_exp(y))
    torch.testing.assert_close(est, torch.exp(x @ y.transpose(1, 2)), rtol=0.08, atol=0.02)


# -- metrics ------------------------------------------------------------------------------------------------------
def test_slice_metrics_follow_the_ctformer_convention_and_match_scikit_image():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    rng = np.random.default_rng(0)
    hu = rng.uniform(-300, 400, (48, 48))
    noisy = hu + rng.normal(0, 30, hu.shape)
    m = P.slice_metrics((noisy + 1024) / 4096, (hu + 1024) / 4096, (-160.0, 240.0))
    a, b = np.clip(noisy, -160, 240), np.clip(hu, -160, 240)
    rmse = math.sqrt(np.mean((a - b) ** 2))
    assert m["rmse"] == pytest.approx(rmse, rel=1e-6)
    assert m["psnr"] == pytest.approx(peak_signal_noise_ratio(b, a, data_range=400), rel=1e-6)
    ref = structural_similarity(b, a, data_range=400, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert m["ssim"] == pytest.approx(100 * ref, abs=0.05)
    assert m["mape"] == pytest.approx(100 * np.mean(np.abs(a - b) / (b + 1024)), rel=1e-6)


# -- learning on the physics fixture ------------------------------------------------------------------------------
LEARN = ["-o", "model.token_dim=8", "-o", "model.heads=2", "-o", "train.epochs=1", "-o", "eval.figures=1"]


@pytest.mark.slow
def test_learns_to_denoise_the_fixture(cli, runs):
    """28 Adam steps (7 slices × 8 visits, 2 slices × 4 patches a step) of a token-dim-8 SEANet on the simulated
    quarter/full-dose pairs: L506's PSNR rises above the LDCT input's and its RMSE falls below it."""
    r = cli("train", "seanet", "--dataset", "mayo", "--fixture", "--runs-dir", runs, *LEARN, "--json")
    assert r.code == 0, r.err
    m = r.json()["metrics"]
    assert m["delta_psnr"] > 0.3 and m["rmse"] < m["ldct_rmse"] - 0.5 and m["n_slices"] == 4, m
    assert m["steps"] == 28 and m["best_epoch"] == 1 and m["split"] == "test"
    run = runs / "seanet" / f"train-{r.json()['run_id'][:12]}"
    for f in ("per_case.csv", "paper.md", "checkpoints/model.safetensors", "figures/learning_curves.png",
              "figures/psnr_per_slice.png", "MANIFEST.sha256"):
        assert (run / f).exists(), f
    assert len(list((run / "figures").glob("denoised_L506_*.png"))) == 1
    splits = json.loads((run / "data.lock.json").read_text())["splits"]
    assert {k: len(v) for k, v in splits.items()} == {"train": 7, "val": 1, "test": 4}
    assert all(s.startswith("L506/quarter_3mm/") for s in splits["test"])
    paper = (run / "paper.md").read_text()
    assert "84.75" in paper and "generated fixture" in paper and "Table 1" in paper and "LDCT input" in paper


@pytest.mark.slow
def test_eval_denoise_and_spectral_map_on_a_finished_run(cli, runs, tmp_path):
    import pydicom

    from medrun.datasets import mayo

    args = ["--dataset", "mayo", "--fixture", "--runs-dir", runs, "-o", "model.token_dim=8", "-o", "model.heads=2",
            "-o", "train.epochs=1", "-o", "train.repeats=1", "-o", "eval.figures=0"]
    tr = cli("train", "seanet", *args, "--json")
    assert tr.code == 0, tr.err
    ev = cli("eval", "seanet", *args, "--json")
    assert ev.code == 0 and ev.json()["metrics"]["psnr"] == tr.json()["metrics"]["psnr"], ev.err

    dn = cli("denoise", "seanet", *args, "--json")  # default: the test split's quarter-dose DICOMs
    assert dn.code == 0 and dn.json()["metrics"]["n"] == 4, dn.err
    run = runs / "seanet" / f"denoise-{dn.json()['run_id'][:12]}"
    outs = sorted((run / "denoised" / "quarter_3mm").glob("*.IMA"))
    assert len(outs) == 4
    rows = (run / "per_case.csv").read_text().splitlines()
    src = rows[1].split(",")[0]
    ds_in, ds_out = pydicom.dcmread(src), pydicom.dcmread(outs[0])
    assert ds_out.SeriesInstanceUID != ds_in.SeriesInstanceUID and ds_out.SOPInstanceUID != ds_in.SOPInstanceUID
    assert (ds_out.RescaleSlope, ds_out.RescaleIntercept) == (ds_in.RescaleSlope, ds_in.RescaleIntercept)
    assert ds_out.Rows == 128
    # HU preserved: the DICOM written back holds the evaluated output (to half a slope)
    from monai.inferers import sliding_window_inference

    from medrun.pipelines import training

    net = P.build_net(_manifest(fixture=True, **{"model.token_dim": 8, "model.heads": 2}).model, 64)
    train_run = runs / "seanet" / f"train-{tr.json()['run_id'][:12]}"
    training.load_weights(net, train_run / "checkpoints" / "model.safetensors")

    hu_in = mayo.read_dicom(src)[0]
    with torch.no_grad():
        ref = sliding_window_inference(torch.from_numpy(mayo.normalise(hu_in))[None, None], (64, 64), 16, net.eval(),
                                       overlap=0.5, mode="gaussian")[0, 0].numpy()
    assert np.abs(mayo.read_dicom(outs[0])[0] - np.maximum(mayo.denormalise(ref), -1024)).max() <= 0.5 + 1e-3

    npy = tmp_path / "npy"  # .npy in (normalised units), .npy out in the same units
    root = __import__("pathlib").Path(src).parents[2]  # the fixture folder (…/L506/quarter_3mm/<file>)
    mayo.to_npy_layout(mayo.read(root, patients=["L506"]), npy)
    dn2 = cli("denoise", "seanet", *args, "-o", f"denoise.input={npy}/L506_0_input.npy", "--json")
    assert dn2.code == 0, dn2.err
    out = np.load(runs / "seanet" / f"denoise-{dn2.json()['run_id'][:12]}" / "denoised" / "npy" / "L506_0_input.npy")
    assert out.dtype == np.float32 and out.shape == (128, 128) and 0.05 < out.mean() < 0.4 and out.max() > 0.2

    sp = cli("spectral-map", "seanet", *args, "--json")
    assert sp.code == 0 and sp.json()["metrics"]["sru_features"] is True, sp.err
    sp_run = runs / "seanet" / f"spectral-map-{sp.json()['run_id'][:12]}"
    assert len(list((sp_run / "figures").glob("spectral_map_L506_*.png"))) == 2 and (sp_run / "spectral.csv").exists()


# -- bad input ----------------------------------------------------------------------------------------------------
@pytest.fixture
def mayo_copy(tmp_path):
    from medrun.datasets import mayo

    return mayo.fixture(tmp_path / "d", 0, patients=("L067", "L506"), slices=2, size=64)


def _no_complete_run(runs):
    for run in (runs / "seanet").iterdir() if (runs / "seanet").exists() else []:
        assert not (run / "MANIFEST.sha256").exists()
        assert json.loads((run / "run.json").read_text())["status"] == "failed"


def _train(cli, runs, root, *extra):
    return cli("train", "seanet", "--dataset", "mayo", "--data-dir", root, "--runs-dir", runs,
               "-o", "model.token_dim=8", "-o", "model.heads=2", "-o", "model.depth=1", *extra)


def test_mixed_rescale_in_a_series_is_a_data_error(cli, runs, mayo_copy):
    import pydicom

    bad = sorted((mayo_copy / "L067" / "quarter_3mm").iterdir())[1]
    ds = pydicom.dcmread(bad)
    ds.RescaleIntercept = "-1000"
    ds.save_as(bad)
    r = _train(cli, runs, mayo_copy)
    assert r.code == 3 and str(bad) in r.err and "mixed rescale" in r.err and "Traceback" not in r.err, r.err
    _no_complete_run(runs)


def test_missing_full_dose_partner_is_a_data_error(cli, runs, mayo_copy):
    gone = sorted((mayo_copy / "L067" / "full_3mm").iterdir())[0]
    gone.unlink()
    r = _train(cli, runs, mayo_copy)
    assert r.code == 3 and "has no full_3mm/ partner" in r.err and "InstanceNumber 1" in r.err, r.err
    _no_complete_run(runs)


def test_missing_full_dose_series_is_a_data_error(cli, runs, mayo_copy):
    import shutil

    shutil.rmtree(mayo_copy / "L506" / "full_3mm")
    r = _train(cli, runs, mayo_copy)
    assert r.code == 3 and "no full_3mm/" in r.err and str(mayo_copy / "L506") in r.err, r.err
    _no_complete_run(runs)


def test_test_patient_absent_and_wrong_folder(cli, runs, mayo_copy):
    r = _train(cli, runs, mayo_copy, "-o", "dataset.test_patients=[L999]")
    assert r.code == 3 and "L999" in r.err and "dataset.test_patients" in r.err, r.err
    _no_complete_run(runs)
    r = _train(cli, runs, mayo_copy / "L067")
    assert r.code == 3 and "one patient's folder" in r.err, r.err


def test_bad_manifest_values_are_usage_errors(cli, runs, mayo_copy):
    r = _train(cli, runs, mayo_copy, "-o", "model.heads=3")
    assert r.code == 2 and "not divisible" in r.err and "Traceback" not in r.err
    r = _train(cli, runs, mayo_copy, "-o", "model.arch=transformer")
    assert r.code == 2 and "model.arch" in r.err
    assert not runs.exists()


def test_denoise_input_missing_is_a_data_error(cli, runs, mayo_copy, tmp_path):
    from safetensors.torch import save_file

    m = _manifest(**{"model.token_dim": 8, "model.heads": 2, "model.depth": 1})
    ck = tmp_path / "w.safetensors"
    save_file(P.build_net(m.model).state_dict(), str(ck))
    r = cli("denoise", "seanet", "--dataset", "mayo", "--data-dir", mayo_copy, "--runs-dir", runs, "--checkpoint", ck,
            "-o", "model.token_dim=8", "-o", "model.heads=2", "-o", "model.depth=1",
            "-o", f"denoise.input={tmp_path / 'nowhere'}")
    assert r.code == 3 and "nowhere" in r.err and "Traceback" not in r.err, r.err
    _no_complete_run(runs)
