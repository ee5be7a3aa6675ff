"""cycleadvgan end to end on the ISIC 2020 fixture at 32 px: `medrun smoke` runs the train stage and then the attack
on it (the card's thresholds), the attack run names its parent and checks its weights, the transfer matrix and the
λ sweep (sweeps of train and attack runs, reused when complete), the MONAI bundle of F, the hand-written pieces
against references, and bad input (issue 7 item 4)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
# The learning check: 32 px, the small CNN as F, a tiny CycleAdvGAN (ngf = ndf = 8, 2 blocks, 96 steps, lr 1e-3).
TINY = {"dataset": {"img_size": 32}, "model": {"arch": "small_cnn"},
        "attack": {"ngf": 8, "ndf": 8, "n_blocks": 2, "lr": 0.001, "epochs": 8, "decay_epochs": 0, "overlays": 2}}
OPTS = ("-o", "model.arch=small_cnn", "-o", "dataset.img_size=32")
GAN = ("-o", "attack.ngf=8", "-o", "attack.ndf=8", "-o", "attack.n_blocks=2", "-o", "attack.lr=0.001")


@pytest.fixture(scope="module")
def smoked(tmp_path_factory):
    """`medrun smoke cycleadvgan` on a small copy of the fixture manifest (the chest X-ray one is left out)."""
    import contextlib
    import io

    import yaml

    from medrun import manifests
    from medrun.cli.main import main

    tmp = tmp_path_factory.mktemp("cyc-manifest")
    small = tmp / "isic2020.fixture.yaml"
    small.write_text(yaml.safe_dump({"extends": str(REPO / "manifests/cycleadvgan/isic2020.fixture.yaml"), **TINY}))
    real = manifests.manifest_path

    def path(slug, ds, fixture=False):
        if slug == "cycleadvgan" and fixture:
            return small if ds == "isic2020" else REPO / "manifests/cycleadvgan/chestxray.yaml"
        return real(slug, ds, fixture=fixture)

    runs = tmp_path_factory.mktemp("cyc-runs")
    buf = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(buf):
        mp.setattr(manifests, "manifest_path", path)
        code = main(["smoke", "cycleadvgan", "--runs-dir", str(runs), "--json"])
    return runs, code, json.loads(buf.getvalue())


def _runs(runs, stage):
    return sorted((runs / "cycleadvgan").glob(f"{stage}-*"))


def _smoke_train(smoked) -> Path:
    """The train run the smoke attacked (transfer adds train runs of other models to the same folder)."""
    runs, _, out = smoked
    attack = Path(out["rows"][0]["run_dir"])
    return runs / "cycleadvgan" / Path(json.loads((attack / "run.json").read_text())["parent_dir"]).name


@pytest.mark.slow
def test_smoke_trains_the_parent_then_attacks_it(smoked):
    """The card: ASR ≥ 0.5 and above same-L2 noise (by ≥ 0.3: noise flips the fixture's benign images, whose class
    signal is the absence of high-frequency texture, so the gain is at most the malignant share, about 0.46), SSIM
    ≥ 0.5, FGSM/PGD/SMIA/HFC ASR ≥ 0.5 (cli smoke runs train first)."""
    runs, code, out = smoked
    got = {r["metric"]: r["value"] for r in out["rows"]}
    assert code == 0 and out["failed"] == 0, got
    assert set(got) == {"asr_cycleadvgan", "ssim_cycleadvgan", "asr_gain_over_noise", "asr_fgsm", "asr_pgd",
                        "asr_smia", "asr_hfc"}
    assert got["asr_cycleadvgan"] >= 0.5 and got["ssim_cycleadvgan"] >= 0.5 and got["asr_gain_over_noise"] >= 0.3
    (train,), (attack,) = _runs(runs, "train"), _runs(runs, "attack")  # the smoke's two runs, before any other test
    t_info, a_info = json.loads((train / "run.json").read_text()), json.loads((attack / "run.json").read_text())
    metrics = json.loads((train / "metrics.json").read_text())
    assert metrics["accuracy"] >= 0.9, metrics  # F learns the texture
    # the best validation epoch through ModelCheckpoint: AUC ties (1.0 from the first epoch here) go to the lower loss
    assert (train / "checkpoints" / "best.ckpt").exists() and metrics["best_val_auc"] == 1.0
    assert metrics["best_epoch"] > 1, metrics
    assert a_info["parent"] == t_info["id"] and a_info["id"] != t_info["id"] and a_info["status"] == "complete"
    from medrun.artifacts import sha256_file

    assert a_info["parent_weights_sha256"] == sha256_file(train / "checkpoints" / "model.safetensors")
    am = json.loads((attack / "metrics.json").read_text())
    for method in ("cycleadvgan", "fgsm", "pgd", "smia", "hfc", "noise"):
        adv = np.load(attack / "adv" / f"{method}.npy")
        assert adv.shape == (am["n_test"], 32, 32, 3) and adv.dtype == np.uint8
    assert am["linf_fgsm"] == pytest.approx(0.03, abs=1e-4)
    assert max(am["linf_pgd"], am["linf_smia"], am["linf_hfc"]) <= 0.03 + 1e-4
    rows = (attack / "per_case.csv").read_text().splitlines()
    assert len(rows) == am["n_test"] + 1
    assert {"success_cycleadvgan", "ssim_pgd", "clean_correct"} <= set(rows[0].split(","))
    assert len(list((attack / "figures").glob("overlay_ISIC_*.png"))) == 2
    for f in ("checkpoints/g_m.safetensors", "checkpoints/g_b.safetensors", "MANIFEST.sha256"):
        assert (attack / f).exists(), f
    paper = (attack / "paper.md").read_text()
    assert "Tables 1–2" in paper and "0.9961" in paper and "CycleAdvGAN (ours)" in paper
    assert "| SMIA |" in paper and "| HFC |" in paper and "0.8968" in paper  # ours beside the paper's ResNet-50 row


@pytest.mark.slow
def test_eval_and_predict_on_the_train_run(cli, smoked, tmp_path):
    runs, _, _ = smoked
    train = _smoke_train(smoked)
    ev = cli("eval", "cycleadvgan", "--dataset", "isic2020", "--fixture", *OPTS, "--runs-dir", runs, "--run", train,
             "--json")
    assert ev.code == 0, ev.err
    assert ev.json()["metrics"]["accuracy"] == json.loads((train / "metrics.json").read_text())["accuracy"]
    pred = cli("predict", "cycleadvgan", "--dataset", "isic2020", "--fixture", *OPTS, "--runs-dir", runs,
               "--run", train,
               "--json")
    assert pred.code == 0 and pred.json()["metrics"]["n"] == 24


@pytest.mark.slow
def test_sweep_lambda_is_a_set_of_attack_runs_with_a_plot(cli, smoked):
    import shutil

    runs, _, _ = smoked
    train = _smoke_train(smoked)
    before = set(_runs(runs, "attack"))
    args = ("sweep-lambda", "cycleadvgan", "--dataset", "isic2020", "--fixture", *OPTS, *GAN, "--runs-dir", runs,
            "--run", train, "-o", "attack.epochs=2", "-o", "attack.decay_epochs=0",
            "-o", "sweep_lambda.lambdas=[0.0,0.9]", "--json")
    r = cli(*args)
    assert r.code == 0, r.err
    m = r.json()["metrics"]
    sweep = Path(r.json()["run_dir"])
    children = json.loads((sweep / "run.json").read_text())["children"]
    members = set(_runs(runs, "attack")) - before
    assert [c["name"] for c in children] == ["lam0.0", "lam0.9"] and {c["stage"] for c in children} == {"attack"}
    assert len(members) == 2 and {p.name[7:] for p in members} == {c["id"][:12] for c in children}
    for p in members:
        info = json.loads((p / "run.json").read_text())
        assert info["parent"] == json.loads((train / "run.json").read_text())["id"]
        assert any(str(a).startswith("attack.lam=") for a in info["command"])  # the child's own command line
    # λ = 0 has no adversarial term at all: it fools F less than λ = 0.9
    assert m["asr_cycleadvgan_lam0.9"] > m["asr_cycleadvgan_lam0.0"]
    assert (sweep / "figures" / "lambda_sweep.png").exists() and "Fig. 2" in (sweep / "paper.md").read_text()
    # the sweep run gone, a second sweep reuses both attack runs instead of training the GANs again
    shutil.rmtree(sweep)
    again = cli(*args)
    assert again.code == 0, again.err
    assert "λ 1/2 lam0.0: reused" in again.err and "λ 2/2 lam0.9: reused" in again.err
    assert set(_runs(runs, "attack")) - before == members and again.json()["metrics"] == m


@pytest.mark.slow
def test_transfer_matrix(cli, smoked):
    runs, _, _ = smoked
    train = _smoke_train(smoked)
    r = cli("transfer", "cycleadvgan", "--dataset", "isic2020", "--fixture", *OPTS, *GAN, "--runs-dir", runs,
            "--run", train, "-o", "attack.epochs=1", "-o", "attack.decay_epochs=0", "-o", "train.epochs=1",
            "-o", "attack.overlays=0",
            "-o", "transfer.models=[small_cnn,resnet18]", "-o", "transfer.methods=[cycleadvgan,fgsm]", "--json")
    assert r.code == 0, r.err
    m = r.json()["metrics"]
    keys = {f"asr_{meth}_{s}_to_{t}" for meth in ("cycleadvgan", "fgsm") for s in ("small_cnn", "resnet18")
            for t in ("small_cnn", "resnet18")}
    assert keys <= set(m) and all(0 <= m[k] <= 1 for k in keys)
    out = Path(r.json()["run_dir"])
    children = {c["name"]: c for c in json.loads((out / "run.json").read_text())["children"]}
    assert set(children) == {"train-resnet18", "attack-small_cnn", "attack-resnet18"}  # the parent is small_cnn's F
    resnet = Path(children["attack-resnet18"]["run_dir"])
    assert json.loads((resnet / "run.json").read_text())["parent"] == children["train-resnet18"]["id"]
    assert (out / "figures" / "transfer_matrix.png").exists() and (resnet / "adv" / "fgsm.npy").exists()
    assert "source \\ target" in (out / "paper.md").read_text()


@pytest.mark.slow
def test_monai_bundle_of_f_predicts_what_medrun_predicts(cli, smoked, tmp_path):
    """`medrun export`: MONAI's bundle runner on F (preprocessing as eval's) gives medrun predict's scores."""
    import csv
    import shutil
    import subprocess
    import sys

    runs, _, _ = smoked
    train = _smoke_train(smoked)
    r = cli("export", train, "--format", "monai-bundle", "--out", tmp_path / "bundle", "--runs-dir", runs, "--json")
    assert r.code == 0, r.err
    lock = json.loads((train / "data.lock.json").read_text())
    images = tmp_path / "images"
    images.mkdir()
    for rel in lock["splits"]["test"][:4]:
        shutil.copy(Path(lock["trees"]["isic2020"]["root"]) / rel, images / Path(rel).name)
    bundle, out = tmp_path / "bundle", tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", bundle / "configs" /
                           "inference.yaml", "--meta_file", bundle / "configs" / "metadata.json", "--bundle_root",
                           bundle, "--input_dir", images, "--output_dir", out], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    p = cli("predict", "cycleadvgan", "--dataset", "isic2020", "--fixture", *OPTS, "--runs-dir", runs, "--run", train,
            "-o", f"predict.input={images}", "--json")
    assert p.code == 0, p.err
    with open(Path(p.json()["run_dir"]) / "per_case.csv") as f:
        ours = {Path(row["file"]).name: row for row in csv.DictReader(f)}
    preds = json.loads((out / "predictions.json").read_text())
    assert len(preds) == 4
    for name, probs in preds.items():
        for cls, v in probs.items():
            assert abs(float(ours[name][f"prob_{cls}"]) - v) < 2e-6, (name, cls)


@pytest.mark.slow
def test_tampered_parent_weights_and_weights_that_do_not_fit(cli, smoked, tmp_path):
    import shutil

    runs, _, _ = smoked
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    train = copy / "cycleadvgan" / _smoke_train(smoked).name
    weights = train / "checkpoints" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    before = set(_runs(copy, "attack"))
    r = cli("attack", "cycleadvgan", "--dataset", "isic2020", "--fixture", *OPTS, "--runs-dir", copy, "--run", train,
            "-o", "attack.epochs=1", "-o", "attack.decay_epochs=0")
    assert r.code == 3 and "does not match its run's MANIFEST.sha256" in r.err and "Traceback" not in r.err
    (new,) = set(_runs(copy, "attack")) - before
    assert not (new / "MANIFEST.sha256").exists() and json.loads((new / "run.json").read_text())["status"] == "failed"
    bad = tmp_path / "other.pt"
    torch.save({"conv.weight": torch.zeros(3, 3)}, bad)
    r = cli("attack", "cycleadvgan", "--dataset", "isic2020", "--fixture", *OPTS, "--runs-dir", copy,
            "--checkpoint", bad)
    assert r.code == 2 and "do not fit this model" in r.err and "Traceback" not in r.err
    other_arch = cli("attack", "cycleadvgan", "--dataset", "isic2020", "--fixture", "-o", "dataset.img_size=32",
                     "-o", "model.arch=resnet18",
                     "--runs-dir", copy,
                     "--checkpoint", runs / "cycleadvgan" / train.name / "checkpoints" / "model.safetensors")
    assert other_arch.code == 2 and "do not fit this model" in other_arch.err


def test_run_of_another_pipeline_or_incomplete_run_is_refused(cli, runs, make_run, data):
    other = make_run(runs, data, run_id="cd" * 32, pipeline="ad-lite")
    r = cli("attack", "cycleadvgan", "--dataset", "isic2020", "--fixture", "--runs-dir", runs, "--run", other)
    assert r.code == 2 and "is a ad-lite train run, not a cycleadvgan train run" in r.err
    half = make_run(runs, data, run_id="ef" * 32, pipeline="cycleadvgan", status="running")
    r = cli("attack", "cycleadvgan", "--dataset", "isic2020", "--fixture", "--runs-dir", runs, "--run", half)
    assert r.code == 2 and "is not complete" in r.err
    assert not list((runs / "cycleadvgan").glob("attack-*"))
    none = cli("attack", "cycleadvgan", "--dataset", "chestxray", "--fixture", "--runs-dir", runs / "empty")
    assert none.code == 2 and "medrun train cycleadvgan --dataset chestxray --fixture" in none.err


def test_unreadable_image_names_the_file(cli, runs, tmp_path):
    from medrun.datasets import chestxray

    root = chestxray.fixture(tmp_path / "d", 0, train_per_class=6, test_per_class=2)
    bad = sorted((root / "train" / "PNEUMONIA").glob("*.jpeg"))[1]
    bad.write_bytes(b"not a jpeg")
    r = cli("train", "cycleadvgan", "--dataset", "chestxray", "--data-dir", root, "--runs-dir", runs, *OPTS,
            "-o", "train.epochs=1", "-o", "dataset.val_fraction=0.3")
    assert r.code == 3 and bad.name in r.err and "Traceback" not in r.err
    assert not runs.exists()  # found by the header check before a run directory opens


def test_wrong_folder_is_named(cli, runs, tmp_path):
    from medrun.datasets import isic2020

    root = isic2020.fixture(tmp_path / "d", 0, per_class=2)
    r = cli("train", "cycleadvgan", "--dataset", "isic2020", "--data-dir", root.parent, "--runs-dir", runs)
    assert r.code == 3 and "one level above" in r.err
    assert not runs.exists()


# -- hand-written pieces against references ------------------------------------------------------------------
def test_fgsm_and_pgd_match_a_reference_and_respect_the_bounds():
    from medrun.pipelines.cycleadvgan.attack import gradient_attack
    from medrun.pipelines.cycleadvgan.config import Attack

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2)).eval()
    x, y = torch.rand(5, 3, 8, 8), torch.tensor([0, 1, 0, 1, 1])
    a = Attack(pgd_random_start=False)
    xr = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(net(xr), y, reduction="sum").backward()
    ref = (x + 0.03 * xr.grad.sign()).clamp(0, 1)
    assert torch.allclose(gradient_attack(net, x, y, "fgsm", a, 0), ref, atol=1e-6)
    pgd = gradient_attack(net, x, y, "pgd", a, 0)
    assert (pgd - x).abs().max() <= 0.03 + 1e-6 and pgd.min() >= 0 and pgd.max() <= 1
    loss = torch.nn.functional.cross_entropy
    assert loss(net(pgd), y) >= loss(net(ref), y) - 1e-6 and loss(net(ref), y) > loss(net(x), y)  # linear F: PGD = FGSM


def test_adversarial_loss_has_the_corrected_sign():
    from medrun.pipelines.cycleadvgan.attack import adv_loss

    z = torch.tensor([[2.0, -1.0], [0.5, 1.0]], requires_grad=True)
    loss = adv_loss(z, 0, "margin", 0.0)  # true class 0: Z_0 − Z_1 clamped at 0 → (3 + 0) / 2
    assert loss.item() == pytest.approx(1.5)
    loss.backward()
    assert z.grad[0, 0] > 0 and z.grad[0, 1] < 0 and z.grad[1].abs().sum() == 0  # descent lowers Z_y, raises the other
    ce = adv_loss(torch.tensor([[0.0, 3.0]]), 0, "ce-flip", 0.0)
    ref = torch.nn.functional.cross_entropy(torch.tensor([[0.0, 3.0]]), torch.tensor([1]))
    assert ce.item() == pytest.approx(ref.item())


def test_ssim_and_noise_helpers():
    from skimage.metrics import structural_similarity

    from medrun.pipelines.cycleadvgan.attack import same_l2_noise, ssim

    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    y = (x + 0.1 * torch.rand_like(x)).clamp(0, 1)
    ref = structural_similarity(x[1].permute(1, 2, 0).numpy(), y[1].permute(1, 2, 0).numpy(), channel_axis=-1,
                                data_range=1.0)
    s = ssim(x, y)
    assert s[1] == pytest.approx(ref) and ssim(x, x) == pytest.approx([1.0, 1.0])
    x = torch.full((3, 3, 16, 16), 0.5)
    adv = x + torch.randn_like(x) * 0.05
    noise = same_l2_noise(x, adv, 0)
    assert torch.allclose((noise - x).flatten(1).norm(dim=1), (adv - x).flatten(1).norm(dim=1), rtol=1e-5)


def test_initial_weights_are_loaded_and_counted_or_refused(cli, runs, tmp_path):
    """model.weights (a user's state dict, loaded with weights_only=True): the backbone tensors that fit are loaded
    and run.json counts them; a file that fits fewer than half is refused before training."""
    from medrun.datasets import chestxray
    from medrun.models import attack_targets

    root = chestxray.fixture(tmp_path / "d", 0, train_per_class=6, test_per_class=2)
    good = tmp_path / "init.pt"
    torch.save(attack_targets.build("small_cnn", 32).state_dict(), good)
    args = ("train", "cycleadvgan", "--dataset", "chestxray", "--data-dir", root, *OPTS,
            "-o", "train.epochs=1", "-o", "dataset.val_fraction=0.3")
    r = cli(*args, "--runs-dir", runs, "-o", f"model.weights={good}")
    assert r.code == 0, r.err
    (run,) = (runs / "cycleadvgan").iterdir()
    info = json.loads((run / "run.json").read_text())
    assert info["weights_loaded"] > 0 and info["weights_missing"] == 0
    bad = tmp_path / "other.pt"
    torch.save({"conv.weight": torch.zeros(3, 3)}, bad)
    r = cli(*args, "--runs-dir", tmp_path / "runs2", "-o", f"model.weights={bad}")
    assert r.code == 2 and "fit only 0 of" in r.err and "Traceback" not in r.err


# -- issue 22: the Inception-V3 and MedViT-S targets, the SMIA and HFC baselines ----------------------------------
def _count(m):
    return sum(p.numel() for p in m.parameters())


def test_inception_v3_and_medvit_have_their_reference_sizes():
    """Built on the meta device (no memory, no init cost). Inception-V3: torchvision's counts, 27,161,264 with the
    auxiliary head at 1000 classes, 23,834,568 without, 21,785,568 for F's backbone. MedViT-S: the count of the
    layout written from its paper (see models/medvit.py)."""
    from medrun.models import attack_targets
    from medrun.models.inception_v3 import InceptionV3
    from medrun.models.medvit import medvit_s

    with torch.device("meta"):
        assert _count(InceptionV3(1000, aux_logits=True)) == 27_161_264
        assert _count(InceptionV3(1000)) == 23_834_568
        inc = attack_targets.build("inception_v3", 224)
        assert _count(inc.features) == 21_785_568 and _count(inc.head) == 2048 * 512 + 512 + 512 * 2 + 2
        assert _count(medvit_s(1000)) == 32_161_440
        assert _count(attack_targets.build("medvit_s", 224).features) == 31_136_440
    with torch.no_grad():  # the smallest inputs each accepts
        assert InceptionV3(None).eval()(torch.rand(1, 3, 75, 75)).shape == (1, 2048)
        assert attack_targets.build("medvit_s", 32).eval()(torch.rand(2, 3, 32, 32)).shape == (2, 2)


def test_image_size_that_a_target_cannot_take_is_a_manifest_error(cli, runs):
    r = cli("train", "cycleadvgan", "--dataset", "isic2020", "--fixture", "-o", "dataset.img_size=32",
            "-o", "model.arch=inception_v3", "--runs-dir", runs)
    assert r.code == 2 and "too small for inception_v3" in r.err and "Traceback" not in r.err
    assert not runs.exists()


@pytest.fixture(scope="module")
def small_f():
    """A 4-conv F that has learnt a separable toy task (bright vs dark images), and its train/test images."""
    from medrun.models import attack_targets

    g = torch.Generator().manual_seed(0)
    x = torch.rand(48, 3, 16, 16, generator=g) * 0.5
    y = (torch.arange(48) % 2).long()
    x[y == 1] += 0.4
    torch.manual_seed(0)
    net = attack_targets.build("small_cnn", 16)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(15):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    net.eval().requires_grad_(False)
    assert (net(x).argmax(1) == y).float().mean() == 1
    return net, x, y


def test_smia_is_pgd_plus_a_stabilisation_term():
    """β = 0 leaves SMIA's deviation loss alone: PGD (captum) without random start (a linear F keeps every
    gradient's sign); β > 0 changes the images, stays in the ε-ball and keeps the attack's loss above the clean one."""
    from medrun.pipelines.cycleadvgan.attack import gradient_attack, signed_ascent, smia_objective
    from medrun.pipelines.cycleadvgan.config import Attack

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2)).eval().requires_grad_(False)
    x, y = torch.rand(5, 3, 8, 8), torch.tensor([0, 1, 0, 1, 1])
    a = Attack(pgd_random_start=False, smia_beta=0.0)
    plain = signed_ascent(net, x, y, smia_objective(a), a, 0)
    assert torch.allclose(plain, gradient_attack(net, x, y, "pgd", a, 0), atol=1e-6)
    b = a.model_copy(update={"smia_beta": 5.0})
    smia = signed_ascent(net, x, y, smia_objective(b), b, 0)
    assert not torch.equal(smia, plain) and (smia - x).abs().max() <= 0.03 + 1e-6
    ce = torch.nn.functional.cross_entropy
    assert ce(net(smia), y) > ce(net(x), y)


def test_hfc_keeps_the_adversarial_features_where_the_other_class_lies(small_f):
    """The feature-density term raises the adversarial features' log-likelihood under the clean mixture of the
    class they are pushed to, compared with the same iterations without it (plain PGD)."""
    from medrun.pipelines.cycleadvgan.attack import (
        HFC_LAYERS,
        LayerTaps,
        fit_feature_density,
        hfc_objective,
        signed_ascent,
    )
    from medrun.pipelines.cycleadvgan.config import Attack

    net, x, y = small_f
    a = Attack(pgd_random_start=False, hfc_components=2, hfc_weight=10.0)
    taps = LayerTaps(net, HFC_LAYERS["small_cnn"])
    try:
        dens = fit_feature_density(net, taps, x, y, a, 0)
        no_hfc = a.model_copy(update={"hfc_weight": 0.0})
        density = hfc_objective(a, taps, dens)
        cons, plain = (signed_ascent(net, x, y, hfc_objective(c, taps, dens), c, 0) for c in (a, no_hfc))

        def loglik(adv):  # the density term alone: (objective − CE) / weight
            with torch.no_grad():
                return float((density(net, adv, x, y) - torch.nn.functional.cross_entropy(
                    net(adv), y, reduction="none")).mean() / a.hfc_weight)

        assert loglik(cons) > loglik(plain)
        assert (cons - x).abs().max() <= 0.03 + 1e-6 and not torch.equal(cons, plain)
    finally:
        taps.close()
    assert not any(m._forward_hooks for m in net.modules())


# -- own images (issue 21) ------------------------------------------------------------------------------------------
def test_own_images_train_f_on_two_class_folders_and_predict_unlabelled_files(cli, runs, unlabelled_images):
    """``--dataset imagefolder``: F trains on two of the fixture's class folders (``dataset.classes``; 16-bit PNG,
    float TIFF, DICOM), the class names travel in its weights, and predict gives one row per readable file of a
    folder holding a DICOM, a 16-bit PNG and a note."""

    base = ("train", "cycleadvgan", "--dataset", "imagefolder", "--fixture", "--runs-dir", runs, "--json",
            "-o", "train.epochs=1")
    r = cli(*base)
    assert r.code == 0, r.err
    new = unlabelled_images
    p = cli("predict", "cycleadvgan", "--run", r.json()["run_id"], "-o", f"predict.input={new}", "--runs-dir", runs,
            "--json")
    assert p.code == 0, p.err
    assert f"skipped {new / 'notes.txt'}: not one of" in p.err
    rows = (Path(p.json()["run_dir"]) / "per_case.csv").read_text().splitlines()
    assert rows[0] == "file,pred,prob_left,prob_right" and len(rows) == 3


def test_three_class_folders_for_a_binary_f_is_a_usage_error():
    """The kit checks the class folders against the network's outputs; F has two, and the fix names
    ``dataset.classes``."""
    from types import SimpleNamespace

    from medrun.errors import UsageError
    from medrun.pipelines.cycleadvgan.config import CycleAdvGanManifest
    from medrun.pipelines.cycleadvgan.pipeline import CycleAdvGan
    from medrun.pipelines.runner import fixture_root

    root = fixture_root("imagefolder", log=lambda *a, **k: None)
    m = CycleAdvGanManifest(dataset={"name": "imagefolder", "root": str(root)})
    p = CycleAdvGan(m, SimpleNamespace(data_roots={"imagefolder": root}, log=lambda *a: None))
    with pytest.raises(UsageError, match="has 3 class folders") as e:
        p.read_own()
    assert "dataset.classes" in e.value.line() and "[" not in e.value.line()
