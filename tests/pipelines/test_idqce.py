"""idqce: the VQ layer and the IDQCE loss against direct formulas (nearest codeword, straight-through gradient,
symmetric loss, frozen f_ξ and codebook in stage 2, EMA, LARS's trust ratio), the networks at full size, learning on
the NIH fixture through the CLI (train-vqvae → pretrain → linear-eval as `reproduce`), the stages on finished runs
(explain, predict, the ImageNet-init baseline with user weights), and bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from medrun.models import idqce as M

SLUG = "idqce"


# -- units ------------------------------------------------------------------------------------------------------------
def test_codebook_picks_the_nearest_codeword_with_straight_through_gradients():
    torch.manual_seed(0)
    cb = M.Codebook(16, 8)
    z = torch.randn(2, 8, 3, 3, requires_grad=True)
    q, codebook, commit, idx = cb(z)
    flat = z.detach().permute(0, 2, 3, 1).reshape(-1, 8)
    ref = torch.cdist(flat, cb.embedding.weight.detach()).argmin(1)
    assert torch.equal(idx, ref)
    torch.testing.assert_close(q.detach().permute(0, 2, 3, 1).reshape(-1, 8), cb.embedding.weight[ref].detach())
    torch.testing.assert_close(codebook, commit)  # the same distance, gradients to different sides
    q.sum().backward()
    torch.testing.assert_close(z.grad, torch.ones_like(z))  # straight-through copy
    assert M.perplexity(torch.arange(16), 16) == pytest.approx(16, rel=1e-4)
    assert M.perplexity(torch.zeros(10, dtype=torch.long), 16) == pytest.approx(1.0)


def test_loss_is_symmetric_and_byol_form():
    torch.manual_seed(0)
    net = M.IDQCE("resnet18", hidden=32, out=16, code_dim=8).eval()
    x1, x2, zq = torch.randn(3, 3, 32, 32), torch.randn(3, 3, 32, 32), torch.randn(3, 8, 4, 4)
    a, b = net.loss(x1, x2, zq), net.loss(x2, x1, zq)
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v)
    p1, t2 = net.online(x1), net.target(x2)
    direct = (2 - 2 * (p1 * t2).sum(1) / (p1.norm(dim=1) * t2.norm(dim=1)))
    torch.testing.assert_close(M.byol_loss(p1, t2), direct)
    assert 0 <= float(a[0]) <= 16
    byol = M.IDQCE("resnet18", hidden=32, out=16, code_dim=8, code_weight=0.0).eval()
    loss, l_byol, l_code = byol.loss(x1, x2, zq)
    assert float(l_code) == 0 and torch.equal(loss, l_byol)


def _lit(method="idqce", code_input="image"):
    from medrun.pipelines.idqce.config import Pretrain
    from medrun.pipelines.idqce.pipeline import LitSSL

    torch.manual_seed(0)
    p = Pretrain(method=method, code_input=code_input, batch_size=4, epochs=1)
    net = M.IDQCE("resnet18", hidden=32, out=16, code_dim=8, code_weight=0.0 if method == "byol" else 1.0)
    return LitSSL(net, M.VQVAE(1, 8, 8, 16), p, steps_per_epoch=1, total_steps=10).train()


@pytest.mark.parametrize("code_input", ["image", "view"])
def test_stage2_leaves_the_vq_encoder_and_codebook_without_gradients(code_input):
    lit = _lit(code_input=code_input)
    before = {k: v.clone() for k, v in lit.vq.state_dict().items()}
    loss = lit.ssl_loss(torch.rand(4, 1, 32, 32))[0]
    loss.backward()
    vq_grads = [p.grad for p in lit.vq.parameters()]
    assert all(g is None or float(g.abs().sum()) == 0 for g in vq_grads)
    assert not lit.vq.training and all(not p.requires_grad for p in lit.vq.parameters())
    assert all(p.grad is None for p in lit.net.target_encoder.parameters())
    assert float(lit.net.encoder.conv1.weight.grad.abs().sum()) > 0
    assert float(lit.net.code_head[0].weight.grad.abs().sum()) > 0  # p_θ trains with θ
    opt = lit.configure_optimizers()["optimizer"]
    assert not {id(p) for p in lit.vq.parameters()} & {id(p) for g in opt.param_groups for p in g["params"]}
    assert all(torch.equal(before[k], v) for k, v in lit.vq.state_dict().items())


def test_byol_ablation_has_no_code_gradient():
    lit = _lit("byol")
    lit.ssl_loss(torch.rand(4, 1, 32, 32))[0].backward()
    assert lit.net.code_head[0].weight.grad is None


def test_ema_update_and_schedule():
    net = M.IDQCE("resnet18", hidden=8, out=4, code_dim=4)
    with torch.no_grad():
        net.encoder.conv1.weight.add_(1.0)
    t0 = net.target_encoder.conv1.weight.clone()
    net.update_target(0.9)
    torch.testing.assert_close(net.target_encoder.conv1.weight, 0.9 * t0 + 0.1 * net.encoder.conv1.weight)
    assert M.ema_momentum(0.996, 0, 100) == pytest.approx(0.996) and M.ema_momentum(0.996, 100, 100) == 1.0


def test_lars_trust_ratio_and_excluded_groups():
    w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))  # ‖w‖ = 5
    b = torch.nn.Parameter(torch.tensor([1.0]))
    w.grad, b.grad = torch.tensor([[0.0, 2.0]]), torch.tensor([0.5])  # ‖g‖ = 2
    opt = M.LARS([{"params": [w]}, {"params": [b], "lars": False, "weight_decay": 0.0}], lr=0.1, momentum=0.0,
                 weight_decay=0.0, eta=0.001)
    opt.step()
    torch.testing.assert_close(w.detach(), torch.tensor([[3.0, 4.0 - 0.1 * 0.001 * 5 / 2 * 2]]))
    torch.testing.assert_close(b.detach(), torch.tensor([1.0 - 0.1 * 0.5]))


# -- full size ---------------------------------------------------------------------------------------------------------
def test_full_size_networks_match_the_card():
    """ResNet-50 trunk (torchvision's 25,557,032 less its 2,049,000-parameter fc) → 2048; projector, predictor and
    p_θ 2048/256 → 4096 → 256 with BN; the VQ-VAE at 224² gives a 56×56×256 latent, K = 1024."""
    from medrun.models import create

    net = create("idqce").eval()
    assert sum(p.numel() for p in net.encoder.parameters()) == 25_557_032 - 2_049_000
    mlp = lambda din: din * 4096 + 4096 + 2 * 4096 + 4096 * 256 + 256  # noqa: E731
    assert sum(p.numel() for p in net.projector.parameters()) == mlp(2048)
    assert sum(p.numel() for p in net.predictor.parameters()) == mlp(256)
    assert sum(p.numel() for p in net.code_head.parameters()) == mlp(256)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert net.encoder(x).shape == (2, 2048) and net.online(x).shape == (2, 256)
        vq = create("idqce-vqvae").eval()
        assert vq.codebook.embedding.weight.shape == (1024, 256)
        rec, _, _, idx = vq(torch.rand(1, 1, 224, 224))
        assert rec.shape == (1, 1, 224, 224) and idx.shape == (56 * 56,)
        assert vq.quantize(torch.rand(1, 1, 224, 224)).shape == (1, 256, 56, 56)
        assert net.code_target(vq.quantize(torch.rand(2, 1, 224, 224))).shape == (2, 256)


# -- through the CLI ---------------------------------------------------------------------------------------------------
# the learning check's settings: 32² inputs (ResNet-18's layer4 sees 1×1), VQ-VAE K = 32 for 40 steps, 5 SSL steps
# without warm-up, the SSL encoder's probe on all labels for 15 epochs (batch 64, lr 0.01)
FAST = ("-o", "dataset.img_size=32", "-o", "vqvae.max_steps=40", "-o", "pretrain.max_steps=5",
        "-o", "pretrain.warmup_epochs=0",
        "-o", "pretrain.epochs=1", "-o", "linear.epochs=15", "-o", "linear.encoders=[ssl]",
        "-o", "linear.fractions=[1.0]", "-o", "linear.batch_size=64", "-o", "linear.lr=0.01")


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    import os

    from medrun.cli.main import main

    runs = tmp_path_factory.mktemp("idqce-runs")
    os.environ["MEDRUN_PLAIN"] = "1"
    assert main(["reproduce", SLUG, "--dataset", "nih", "--fixture", "--runs-dir", str(runs), *FAST]) == 0
    return runs


def _run(runs, stage) -> Path:
    (run,) = [p for p in (runs / SLUG).glob(f"{stage}-*") if (p / "MANIFEST.sha256").exists()]
    return run


@pytest.mark.slow
def test_learns_on_fixture(reproduced):
    """`medrun reproduce` on the NIH fixture at 32²: the VQ-VAE's test reconstruction error falls by half with more
    than 4 codewords in use, the SSL loss falls and the EMA target differs from the online network, and the linear
    probe on the frozen features beats chance (0.5) clearly on the test list."""
    m = json.loads((_run(reproduced, "reproduce") / "metrics.json").read_text())
    assert m["recon_mse_fall"] >= 0.5 and m["perplexity"] > 4, m
    assert m["ssl_loss_last"] < m["ssl_loss_first"] and m["ema_rel_diff"] > 0, m
    assert m["auc"] >= 0.70, m
    for stage, files in {"train-vqvae": ("figures/reconstructions.png", "figures/codebook_usage.png"),
                         "pretrain": ("checkpoints/model.safetensors", "checkpoints/full.safetensors"),
                         "linear-eval": ("per_case.csv", "probes.csv", "checkpoints/heads.safetensors",
                                         "figures/auc_by_fraction.png")}.items():
        for f in (*files, "paper.md", "MANIFEST.sha256"):
            assert (_run(reproduced, stage) / f).exists(), (stage, f)
    page = (_run(reproduced, "linear-eval") / "paper.md").read_text()
    assert "Table 2" in page and "not comparable" in page.lower()


@pytest.mark.slow
def test_stages_on_finished_runs(cli, reproduced, tmp_path):
    runs = reproduced
    opts = ("--dataset", "nih", "--fixture", "--runs-dir", runs, *FAST)
    ex = cli("explain", SLUG, *opts, "-o", "explain.fraction=1.0", "-o", "explain.n_images=3", "--json")
    assert ex.code == 0, ex.err
    ex_run = Path(ex.json()["run_dir"])
    assert (ex_run / "figures" / "gradcam.png").exists() and (ex_run / "cams.npz").exists()
    import numpy as np

    with np.load(ex_run / "cams.npz") as z:
        assert z["cams"].shape == (3, 32, 32) and z["cams"].max() <= 1.0 + 1e-6
    pr = cli("predict", SLUG, *opts, "--json")
    assert pr.code == 0, pr.err
    rows = (Path(pr.json()["run_dir"]) / "per_case.csv").read_text().splitlines()
    assert rows[0].startswith("file,top,prob_Cardiomegaly") and len(rows) > 50

    # the ImageNet-init baseline with user weights in torchvision's layout (fc included), on the pretrain run
    from safetensors.torch import save_file

    state = {**M.ResNetTrunk("resnet18").state_dict(), "fc.weight": torch.zeros(1000, 512),
             "fc.bias": torch.zeros(1000)}
    save_file(state, tmp_path / "r18.safetensors")
    pre = _run(runs, "pretrain")
    li = cli("linear-eval", SLUG, *opts, "--run", pre, "-o", "linear.encoders=[imagenet]",
             "-o", f"linear.init_checkpoint={tmp_path / 'r18.safetensors'}", "--json")
    assert li.code == 0, li.err
    assert "auc_imagenet_100pct" in li.json()["metrics"]


# -- bad input ---------------------------------------------------------------------------------------------------------
@pytest.fixture
def nih_copy(tmp_path):
    from medrun.datasets import get

    return get("nih").make_fixture(tmp_path / "nih", 0)


def _one_line(err: str) -> bool:
    return "Traceback" not in err and len([ln for ln in err.splitlines() if ln.startswith("error:")]) == 1


def _nothing_complete(runs) -> bool:
    return not list(Path(runs).glob("**/MANIFEST.sha256"))


def test_missing_image_names_the_file(cli, runs, nih_copy):
    victim = sorted((nih_copy / "images_001" / "images").iterdir())[3]
    victim.unlink()
    r = cli("train-vqvae", SLUG, "--dataset", "nih", "--data-dir", nih_copy, "--runs-dir", runs)
    assert r.code == 3 and victim.name in r.err and "Data_Entry_2017.csv" in r.err and _one_line(r.err)
    assert _nothing_complete(runs)


def test_label_outside_the_set_names_the_line(cli, runs, nih_copy):
    csv = nih_copy / "Data_Entry_2017.csv"
    lines = csv.read_text().splitlines()
    lines[4] = lines[4].replace(lines[4].split(",")[1], "Effusion|Covid", 1)
    csv.write_text("\n".join(lines) + "\n")
    r = cli("train-vqvae", SLUG, "--dataset", "nih", "--data-dir", nih_copy, "--runs-dir", runs)
    assert r.code == 3 and "line 5" in r.err and "Covid" in r.err and _one_line(r.err)
    assert _nothing_complete(runs)


def test_manifest_errors(cli, runs):
    r = cli("train-vqvae", SLUG, "--dataset", "nih", "--fixture", "--runs-dir", runs, "-o", "dataset.labels=[Flu]")
    assert r.code == 2 and "Flu" in r.err
    r = cli("train-vqvae", SLUG, "--dataset", "nih", "--fixture", "--runs-dir", runs, "-o", "vqvae.axis=channel")
    assert r.code == 2 and "vqvae.dim" in r.err
    r = cli("pretrain", SLUG, "--dataset", "nih", "--fixture", "--runs-dir", runs, "-o", "pretrain.method=simclr")
    assert r.code == 2
    r = cli("linear-eval", SLUG, "--dataset", "nih", "--fixture", "--runs-dir", runs, "-o", "linear.fractions=[0]")
    assert r.code == 2 and "fraction" in r.err
    assert _nothing_complete(runs)


def test_pretrain_without_a_vqvae_run_says_what_to_run(cli, runs):
    r = cli("pretrain", SLUG, "--dataset", "nih", "--fixture", "--runs-dir", runs)
    assert r.code == 2 and "train-vqvae" in r.err and _one_line(r.err)
    assert _nothing_complete(runs)


def test_imagenet_weights_of_another_network_are_refused(cli, runs, tmp_path):
    """A state dict that is not a torchvision ResNet: exit 2 naming the file; the run is not marked complete."""
    from safetensors.torch import save_file

    from medrun.pipelines.idqce.pipeline import Idqce

    bad = tmp_path / "other.safetensors"
    save_file({"features.0.weight": torch.zeros(4, 3, 3, 3)}, bad)
    trunk = tmp_path / "trunk.safetensors"
    save_file(M.ResNetTrunk("resnet18").state_dict(), trunk)
    r = cli("linear-eval", SLUG, "--dataset", "nih", "--fixture", "--runs-dir", runs, "--checkpoint", trunk,
            "-o", "dataset.img_size=32", "-o", "linear.encoders=[imagenet]", "-o", f"linear.init_checkpoint={bad}")
    assert r.code == 2 and "other.safetensors" in r.err and _one_line(r.err), r.err
    assert _nothing_complete(runs)
    assert Idqce  # the implementation imports


# -- the other datasets (MIMIC, VinDr, MuReD, ODIR, EyePACS) -----------------------------------------------------------
TINY = ("-o", "dataset.img_size=32", "-o", "linear.epochs=10", "-o", "linear.encoders=[ssl]",
        "-o", "linear.fractions=[1.0]", "-o", "linear.batch_size=64", "-o", "linear.lr=0.01")


@pytest.mark.slow
def test_fundus_eyepacs_pretrain_then_odir_linear_eval(cli, runs):
    """Table 3's flow on the fixtures: VQ-VAE and IDQCE pre-training on EyePACS, then a linear probe on ODIR's
    frozen features of that run (--run); the probe beats chance clearly on ODIR's test split."""
    opts = ("--fixture", "--runs-dir", runs, *TINY, "-o", "vqvae.max_steps=10", "-o", "pretrain.max_steps=3",
            "-o", "pretrain.warmup_epochs=0", "-o", "pretrain.epochs=1")
    assert cli("train-vqvae", SLUG, "--dataset", "eyepacs", *opts).code == 0
    pre = cli("pretrain", SLUG, "--dataset", "eyepacs", *opts, "--json")
    assert pre.code == 0, pre.err
    li = cli("linear-eval", SLUG, "--dataset", "odir", *opts, "--run", pre.json()["run_dir"], "--json")
    assert li.code == 0, li.err
    m = li.json()["metrics"]
    assert m["auc"] >= 0.70 and {"auc_D", "auc_G", "auc_C", "auc_A"} <= set(m), m
    page = (Path(li.json()["run_dir"]) / "paper.md").read_text()
    assert "Table 3" in page


@pytest.mark.slow
def test_cxr_vindr_linear_eval_from_a_checkpoint(cli, runs, tmp_path):
    """VinDr-CXR (DICOM) linear evaluation on a given trunk (--checkpoint, as for NIH→VinDr with the NIH run's
    weights): the drawn pathologies are learnt from frozen features, scored on the official test split."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    save_file(M.ResNetTrunk("resnet18").state_dict(), tmp_path / "trunk.safetensors")
    li = cli("linear-eval", SLUG, "--dataset", "vindr", "--fixture", "--runs-dir", runs, *TINY,
             "--checkpoint", tmp_path / "trunk.safetensors", "--json")
    assert li.code == 0, li.err
    m = li.json()["metrics"]
    assert m["auc"] >= 0.70 and "auc_Nodule/Mass" in m, m
    per_case = (Path(li.json()["run_dir"]) / "per_case.csv").read_text().splitlines()
    assert len(per_case) == 61 and "prob_Pleural effusion" in per_case[0]


def _break(name: str, root: Path) -> str:
    """Delete one image a label CSV names; returns the file name the error must give."""
    if name == "mimic":
        from medrun.datasets import mimic

        victim = mimic.read_split(root)["test"][0].path
    elif name == "vindr":
        victim = sorted((root / "test").iterdir())[0]
    elif name == "mured":
        victim = root / "images" / "5.png"
    elif name == "odir":
        victim = root / "ODIR-5K" / "Training Images" / "2_left.jpg"
    else:
        victim = sorted((root / "train").iterdir())[0]
    victim.unlink()
    return victim.name


@pytest.mark.parametrize("name", ["mured", "odir", "eyepacs", "mimic", "vindr"])
def test_other_datasets_bad_input_exit_3(cli, runs, tmp_path, name):
    """A row naming a missing image: one line naming it, exit 3, no run complete; likewise a missing label CSV."""
    from medrun.datasets import get

    root = get(name).make_fixture(tmp_path / name, 0)
    gone = _break(name, root)
    r = cli("train-vqvae", SLUG, "--dataset", name, "--data-dir", root, "--runs-dir", runs)
    assert r.code == 3 and gone.replace(".dicom", "") in r.err and _one_line(r.err), r.err
    csv = {"mured": "train_data.csv", "odir": "full_df.csv", "eyepacs": "train",
           "mimic": "mimic-cxr-2.0.0-chexpert.csv.gz", "vindr": "annotations/image_labels_train.csv"}[name]
    target = root / csv
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    r = cli("linear-eval", SLUG, "--dataset", name, "--data-dir", root, "--runs-dir", runs)
    assert r.code == 3 and Path(csv).name in r.err and _one_line(r.err), r.err
    assert _nothing_complete(runs)


def test_other_datasets_labels_are_checked(cli, runs):
    r = cli("train-vqvae", SLUG, "--dataset", "mured", "--fixture", "--runs-dir", runs, "-o", "dataset.labels=[Flu]")
    assert r.code == 2 and "Flu" in r.err and "mured" in r.err
    from medrun.manifests import load_file, manifest_path, validate
    from medrun.pipelines.idqce.config import IdqceManifest

    for name, n in {"mimic": 14, "vindr": 14, "mured": 20, "odir": 8, "eyepacs": 5}.items():
        m = validate(load_file(manifest_path(SLUG, name)), IdqceManifest)
        assert len(m.dataset.labels) == n and m.paper.expect is not None
