"""counterfactual-ldm: the paper's models at full size, the guided sampler and Algorithm 1 against plain
reference loops, the SSIM term against scikit-image, learning on the fixture, and bad input."""

import copy
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

SD21_UNET = dict(sample_size=96, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280),
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=1024,
                 attention_head_dim=(5, 10, 20, 20), use_linear_projection=True)


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_full_size_sd21_parts_and_classifier():
    """SD 2.1's UNet (865.9 M) and VAE (83.7 M) from diffusers at the release's config (built on the meta device:
    no weights exist offline), f_φ a ResNet50 with 8 outputs at 224 px."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from medrun.pipelines.counterfactual_ldm.pipeline import Classifier

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD21_UNET)
        vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4)
    assert n_params(unet) == 865_910_724 and n_params(vae) == 83_653_863
    clf = Classifier("resnet50", 224).eval()
    assert n_params(clf) == 23_528_264
    with torch.no_grad():
        assert clf(torch.rand(1, 3, 100, 100)).shape == (1, 8)  # resized to 224 inside


def test_full_size_concept_vae():
    """The card's VAE: 256 px, six blocks 64…512 → 4×4×512, m = 128; one forward pass."""
    from medrun.models.cdct import ConceptVAE

    vae = ConceptVAE().eval()
    assert vae.bottom == 4 and vae.latent == 128
    with torch.no_grad():
        rec, mu, logvar = vae(torch.rand(1, 3, 256, 256))
    assert rec.shape == (1, 3, 256, 256) and mu.shape == logvar.shape == (1, 128)
    assert 0 <= float(rec.min()) and float(rec.max()) <= 1


class _P:
    """The bits of a pipeline the sampler reads."""

    def __init__(self):
        self.m = SimpleNamespace(finetune_ldm=SimpleNamespace(sd_path=None), trainer=None)
        self.ctx = SimpleNamespace(predictor=lambda: SimpleNamespace(device=torch.device("cpu")))


def _sampler(lam_steps=3):
    from medrun.pipelines.counterfactual_ldm import ldm as L
    from medrun.pipelines.counterfactual_ldm.generate import Counterfactuals

    torch.manual_seed(0)
    model = L.tiny(32).eval().requires_grad_(False)
    clf = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(48, 8)).eval()
    cfg = SimpleNamespace(num_inference_steps=10, guided_steps=lam_steps, conditional=True, scale_by_sigma=False)
    return Counterfactuals(_P(), model, clf, cfg), model, cfg


def test_unguided_trajectory_is_plain_pndm_sampling():
    """λ_c = 0: the counterfactual equals diffusers' PNDM sampler run over the same tail of the grid from the same
    z_T (reference loop written out plainly), and the trajectory has T + 2 images."""
    from medrun.pipelines.counterfactual_ldm import ldm as L

    gen, model, cfg = _sampler()
    x = torch.rand(1, 3, 32, 32)
    traj, _ = gen.run(x, [1, 2], 0.0, seed=5)
    assert traj.shape == (2, cfg.guided_steps + 2, 3, 32, 32)
    sched = L.scheduler("pndm")
    sched.set_timesteps(cfg.num_inference_steps)
    tail = [int(t) for t in sched.timesteps[-cfg.guided_steps:]]
    with torch.no_grad():
        z0 = model.vae.encode(x * 2 - 1).latent_dist.mode() * L.SCALE
        eps = torch.randn(z0.shape, generator=torch.Generator().manual_seed(5))
        z = sched.add_noise(z0, eps, torch.tensor([tail[0]])).repeat(2, 1, 1, 1)
        cond = model.encode_text(gen.prompts([1, 2]))
        for t in [tail[0], tail[1], *tail[1:]]:
            z = sched.step(model.unet(z, t, encoder_hidden_states=cond).sample, t, z).prev_sample
        ref = ((model.vae.decode(z / L.SCALE).sample + 1) / 2).clamp(0, 1)
    assert torch.allclose(traj[:, -1], ref, atol=1e-5)
    assert torch.equal(traj[:, 0], x.repeat(2, 1, 1, 1))


def test_guidance_raises_target_probability():
    """On the same seed, λ_c = 4 gives a higher p(target) than λ_c = 0 (the guidance gradient points the right way)."""
    gen, _, _ = _sampler()
    x = torch.rand(1, 3, 32, 32)
    _, p0 = gen.run(x, [3, 5], 0.0, seed=1)
    _, p4 = gen.run(x, [3, 5], 40.0, seed=1)
    assert float(p4.mean()) > float(p0.mean())


def test_algorithm1_deltas_match_a_plain_loop():
    from medrun.pipelines.counterfactual_ldm.discover import deltas

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Softmax(1)).eval()
    mu, values = torch.randn(3, 4), [-3.0, 0.0, 3.0]

    def pred(n, z):
        with torch.no_grad():
            return n(z)

    got, p0 = deltas(pred, net, mu, 2, values, batch=5)
    for a in range(3):
        base = float(net(mu[a:a + 1])[0, 2])
        assert p0[a] == pytest.approx(base, abs=1e-6)
        for i in range(4):
            for k, d in enumerate(values):
                l2 = copy.deepcopy(mu[a:a + 1])
                l2[0, i] = d  # replacement, not an offset (card's correction of Algorithm 1)
                assert got[a, i, k] == pytest.approx(float(net(l2)[0, 2]) - base, abs=1e-6)


def test_ssim_term_matches_scikit_image():
    from skimage.metrics import structural_similarity

    from medrun.pipelines.counterfactual_ldm.concept_vae import vae_loss

    rng = np.random.default_rng(0)
    a = rng.random((1, 3, 48, 48)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1).astype(np.float32)
    x, r = torch.from_numpy(a), torch.from_numpy(b)
    parts = vae_loss(x, r, torch.zeros(1, 4), torch.zeros(1, 4), 1e-3)
    ref = np.mean([structural_similarity(a[0, c], b[0, c], data_range=1.0, gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False, win_size=11) for c in range(3)])
    assert float(parts["ssim"]) == pytest.approx(1 - ref, abs=2e-2)  # borders: kornia pads, skimage crops
    assert float(parts["kld"]) == 0.0 and float(parts["l1"]) == pytest.approx(float(np.abs(a - b).mean()), rel=1e-5)


@pytest.mark.slow
def test_learns_classifier_on_fixture(cli, runs):
    """f_φ (ResNet18 at 32 px, 4 epochs, on the fixture's planted colours and artefacts) clearly beats 1/8: ≥ 0.6."""
    r = cli("train-classifier", "counterfactual-ldm", "--dataset", "isic2019", "--fixture", "--runs-dir", runs,
            "-o", "classifier.epochs=4", "-o", "classifier.size=32", "--json")
    assert r.code == 0, r.err
    out = r.json()
    assert out["metrics"]["accuracy"] >= 0.6, out["metrics"]
    run = runs / "counterfactual-ldm" / f"train-classifier-{out['run_id'][:12]}"
    for f in ("checkpoints/model.safetensors", "per_case.csv", "figures/confusion_matrix.png", "paper.md"):
        assert (run / f).exists(), f


def _nothing_complete(runs):
    return not any((p / "MANIFEST.sha256").exists() for p in runs.glob("*/*")) if runs.exists() else True


def test_onehot_row_not_summing_to_one(cli, runs, tmp_path):
    from medrun.datasets.isic2019 import fixture

    root = fixture(tmp_path / "isic")
    gt = root / "ISIC_2019_Training_GroundTruth.csv"
    lines = gt.read_text().splitlines()
    lines[3] = lines[3].split(",")[0] + ",0.0" * 9  # no class marked: the row sums to 0
    gt.write_text("\n".join(lines) + "\n")
    r = cli("train-classifier", "counterfactual-ldm", "--dataset", "isic2019", "--data-dir", root, "--runs-dir", runs,
            "-o", "classifier.epochs=1")
    assert r.code == 3, r.err
    assert "ISIC_2019_Training_GroundTruth.csv:4" in r.err and "sums to" in r.err and "Traceback" not in r.err
    assert _nothing_complete(runs)


def _sd_folder(tmp_path, latent=4, unet_in=4):
    sd = tmp_path / "sd21"
    for part in ("vae", "unet", "text_encoder", "tokenizer", "scheduler"):
        (sd / part).mkdir(parents=True)
    (sd / "vae" / "config.json").write_text(json.dumps({"latent_channels": latent,
                                                         "block_out_channels": [128, 256, 512, 512]}))
    (sd / "unet" / "config.json").write_text(json.dumps({"in_channels": unet_in, "cross_attention_dim": 1024}))
    (sd / "text_encoder" / "config.json").write_text(json.dumps({"hidden_size": 1024}))
    return sd


@pytest.mark.parametrize("case", ["no-unet", "latent-size"])
def test_bad_stable_diffusion_folder(cli, runs, tmp_path, case):
    import shutil

    sd = _sd_folder(tmp_path, unet_in=9 if case == "latent-size" else 4)
    if case == "no-unet":
        shutil.rmtree(sd / "unet")
    r = cli("train-classifier", "counterfactual-ldm", "--dataset", "isic2019", "--fixture", "--runs-dir", runs,
            "-o", f"finetune_ldm.sd_path={sd}", "-o", "finetune_ldm.size=512")
    assert r.code == 4, r.err
    assert ("has no unet/" if case == "no-unet" else "latent channels but unet/ takes 9") in r.err
    assert str(sd) in r.err and "Traceback" not in r.err
    assert _nothing_complete(runs)


def test_missing_classifier_run_says_what_to_do(cli, runs):
    r = cli("train-concepts", "counterfactual-ldm", "--dataset", "isic2019", "--fixture", "--runs-dir", runs)
    assert r.code == 2 and "medrun train-classifier counterfactual-ldm --dataset isic2019 --fixture" in r.err
