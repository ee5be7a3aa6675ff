"""fed-memory: the networks at full size, CME arithmetic against direct formulas, the Flower strategy, learning on the
fixture through the CLI (scenario 1, tiny set), the scenario-4 identity, the later stages, and bad input."""

import json

import numpy as np
import pytest
import torch

from medrun.pipelines.fed_memory import cme, nets

TINY = ("-o", "train.rounds=2", "-o", "train.epochs=2")


def _train(cli, runs, *extra):
    return cli("train", "fed-memory", "--dataset", "brain-tumor-mri", "--fixture", "--runs-dir", runs, "--json", *extra)


def _complete(runs):
    return sorted(runs.glob("fed-memory/*/MANIFEST.sha256"))


def n_params(m):
    return sum(p.numel() for p in m.parameters())


# -- full size ---------------------------------------------------------------------------------------------------
def test_full_size_architectures_and_head():
    """Table 1's backbones at full size: pooled features 2048 / 1024 / 9216 (card), the common 128-128-4 head, one
    forward pass each (64×64, which the card's smoke allows)."""
    expect = {"resnet50": (2048, 23_511_872), "densenet121": (1024, 6_953_856), "alexnet_skip": (9216, 2_568_256)}
    x = torch.rand(2, 3, 64, 64) * 255
    for arch, (feat, backbone) in expect.items():
        net = nets.ClientNet(arch).eval()
        assert net.backbone.out_features == feat
        assert n_params(net.backbone) == backbone
        assert n_params(net.head) == feat * 128 + 128 + 128 * 128 + 128 + 128 * 4 + 4
        assert net.state_dict()[nets.ANALYSIS].shape == (128, 128)  # the CME analysis layer: 16,384 weights
        with torch.no_grad():
            assert net(x).shape == (2, 4)
    # DenseNet121 features = torchvision's 7,978,856 − its 1,025,000-parameter classifier; AlexNet features 2,469,696
    # plus the card's 1×1 skip (384·256 + 256).
    assert 7_978_856 - 1_025_000 == 6_953_856 and 2_469_696 + 384 * 256 + 256 == 2_568_256


def test_alexnet_skip_wiring():
    net = nets.AlexNetSkip(1.0)
    x3 = net.stem(torch.rand(1, 3, 224, 224))
    assert x3.shape == (1, 384, 13, 13)
    assert net.skip.kernel_size == (1, 1) and net.skip.in_channels == 384 and net.skip.out_channels == 256
    assert net(torch.rand(1, 3, 224, 224)).shape == (1, 9216)


# -- CMEs --------------------------------------------------------------------------------------------------------
def test_cme_is_eq2_with_the_guard():
    prev, now = np.array([1.0, 2.0, 0.0, -1e-12, 4.0]), np.array([2.0, 1.0, 1e-9, 0.0, 4.0])
    c = cme.cme(now, prev)
    np.testing.assert_allclose(c[:2], [(2 - 1) / 2, (1 - 2) / 1])
    np.testing.assert_allclose(c[2], 1e-9 / 1e-8, rtol=1e-6)  # |w| < ε: divided by sign(w)·ε
    np.testing.assert_allclose(c[3], 1e-12 / 1e-8, rtol=1e-6)  # w = 0: +ε
    assert c[4] == 0 and c.dtype == np.float32


def test_recorder_acf_and_archive_against_direct_formulas():
    rng = np.random.default_rng(0)
    names = ["a", "head.fc2.weight"]
    start = {"a": rng.normal(size=6), "head.fc2.weight": rng.normal(size=(128, 128))}
    steps = [{k: v + rng.normal(scale=0.1, size=v.shape) for k, v in start.items()} for _ in range(3)]
    rec = cme.Recorder(names, "head.fc2.weight")
    rec.start_round(1, start, None)
    for w in steps:
        rec.epoch(w)
    rec.end_round()
    seq = [start, *steps]
    for li, name in enumerate(names):
        cs = [cme.cme(seq[i + 1][name], seq[i][name]).astype(np.float64) for i in range(3)]
        acf = np.mean([np.mean(cs[i] * cs[i + 1]) for i in range(2)])
        norm = acf / np.mean([np.mean(cs[i] ** 2) for i in range(2)])
        row = rec.rows[li]
        assert row["name"] == name and row["round"] == 1
        np.testing.assert_allclose([row["acf"], row["acf_norm"]], [acf, norm], rtol=1e-5)
        np.testing.assert_allclose(row["mean"], np.mean([c.mean() for c in cs]), rtol=1e-5)
    assert rec.archive[0].shape == (3, 16384) and rec.archive[0].dtype == np.float32
    rec.start_round(2, {k: v * 2 for k, v in steps[-1].items()}, steps[-1])  # the aggregation jump, logged apart
    np.testing.assert_allclose(rec.jumps[0]["jump_mean_abs"], 0.5, rtol=1e-6)  # (2w − w) / 2w


def test_covariance_map_is_np_cov_of_rows_symmetric_psd_and_proxies():
    rng = np.random.default_rng(1)
    c = rng.normal(size=16384).astype(np.float32)
    cov = cme.covariance(c)
    np.testing.assert_allclose(cov, np.cov(c.astype(np.float64).reshape(128, 128)))
    assert cov.shape == (128, 128) and np.allclose(cov, cov.T) and np.linalg.eigvalsh(cov).min() > -1e-10
    maps = np.stack([np.eye(3), 2 * np.eye(3), 2.02 * np.eye(3)])
    s = cme.stabilisation(maps)
    np.testing.assert_allclose(s, [1.0, 0.01])
    assert cme.saturation_round(s, 0.05) == 3 and cme.saturation_round(s, 0.001) is None
    assert cme.acf_stability(np.array([[1.0, 0.0], [3.0, 0.0]])) == pytest.approx(0.5)  # sd 1 and 0 → mean 0.5
    assert cme.tracked([("w.weight", 0), ("w.bias", 0), ("bn.weight", 0)]) == ["w.weight", "bn.weight"]


# -- Flower ------------------------------------------------------------------------------------------------------
def test_strategy_is_an_unweighted_mean_and_integers_come_from_client_1():
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

    from medrun.pipelines.fed_memory.flower import EqualAvg

    def res(cid, w, n):
        return None, FitRes(Status(Code.OK, ""), ndarrays_to_parameters([np.full(2, w, np.float32), np.array(cid + 5)]),
                            n, {"cid": cid, "local_accuracy": 0.5})

    strategy = EqualAvg(3, [np.zeros(2, np.float32), np.array(0)])
    params, metrics = strategy.aggregate_fit(1, [res(2, 9.0, 1000), res(0, 0.0, 1), res(1, 3.0, 10)], [])
    avg, count = parameters_to_ndarrays(params)
    np.testing.assert_allclose(avg, [4.0, 4.0])  # (0 + 3 + 9) / 3, whatever the sample counts
    assert int(count) == 5 and metrics["mean_local_accuracy"] == 0.5


def test_deployment_apps_build():
    from flwr.client import ClientApp
    from flwr.server import ServerApp

    from medrun.pipelines.fed_memory.flower import client_app, server_app

    assert isinstance(server_app(3, [np.zeros(2, np.float32)], rounds=10), ServerApp)
    assert isinstance(client_app(lambda context: None), ClientApp)


# -- learning and the stages ---------------------------------------------------------------------------------------
def test_learns_on_fixture_scenario1_tiny(cli, runs):
    """The card's learning check: scenario 1, tiny heterogeneous set, 8 t-rounds × 2 epochs at 64×64; mean client
    accuracy on the held-out 20 % ≥ 0.5 (chance 0.25); head tensors l−1 and l identical, backbones different."""
    r = _train(cli, runs)
    assert r.code == 0, r.err
    m = r.json()["metrics"]
    assert m["mean_accuracy"] >= 0.5, m
    assert m["shared_identical"] == 1 and m["backbones_differ"] == 1 and m["states_identical"] == 0
    assert m["cme_shape_ok"] == 1 and m["cov_symmetric_psd"] == 1
    run = runs / "fed-memory" / f"train-{r.json()['run_id'][:12]}"
    archive = np.load(run / "cme" / "client1.npy")
    assert archive.shape == (8, 2, 16384) and archive.dtype == np.float32
    rows = (run / "cme" / "acf.csv").read_text().strip().splitlines()[1:]
    n_weights = [len(cme.tracked(nets.ClientNet(a).named_parameters()))
                 for a in ("cnn4", "densenet_tiny", "alexnet_skip_tiny")]
    assert len(rows) == m["acf_rows"] == 8 * sum(n_weights)  # (#weight tensors × rounds) per client
    for f in ("paper.md", "rounds.csv", "figures/federated_curves.png", "checkpoints/client3.safetensors",
              "cme/jumps.csv", "MANIFEST.sha256"):
        assert (run / f).exists(), f
    assert "Table 2" in (run / "paper.md").read_text() and "not comparable" in (run / "paper.md").read_text()


def test_scenario4_clients_are_identical_after_aggregation(cli, runs):
    r = _train(cli, runs, "-o", "fed.scenario=4", *TINY)
    assert r.code == 0, r.err
    m = r.json()["metrics"]
    assert m["states_identical"] == 1 and m["shared_identical"] == 1, m
    assert {m[f"client{k}_arch"] for k in (1, 2, 3)} == {"cnn4"}
    run = runs / "fed-memory" / f"train-{r.json()['run_id'][:12]}"
    from safetensors.torch import load_file

    a, b = load_file(run / "checkpoints/client1.safetensors"), load_file(run / "checkpoints/client3.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_eval_visualize_analyze_on_a_train_run(cli, runs):
    assert _train(cli, runs, *TINY).code == 0
    ev = cli("eval", "fed-memory", "--dataset", "brain-tumor-mri", "--fixture", "--runs-dir", runs, "--json", *TINY)
    assert ev.code == 0, ev.err
    em = ev.json()["metrics"]
    assert 0 <= em["mean_accuracy"] <= 1 and "client3_f1_macro" in em
    ev_run = runs / "fed-memory" / f"eval-{ev.json()['run_id'][:12]}"
    assert (ev_run / "per_case.csv").exists() and (ev_run / "figures/confusion_matrices.png").exists()
    vi = cli("visualize", "fed-memory", "--dataset", "brain-tumor-mri", "--fixture", "--runs-dir", runs, "--json",
             *TINY)
    assert vi.code == 0, vi.err
    assert vi.json()["metrics"]["cov_symmetric_psd"] == 1
    vi_run = runs / "fed-memory" / f"visualize-{vi.json()['run_id'][:12]}"
    for k in (1, 2, 3):
        assert (vi_run / f"figures/covariance_client{k}.png").exists()
        assert (vi_run / f"figures/acf_client{k}.png").exists()
        assert np.load(vi_run / f"covariance/client{k}.npy").shape == (2, 128, 128)
    an = cli("analyze", "fed-memory", "--dataset", "brain-tumor-mri", "--fixture", "--runs-dir", runs, "--json", *TINY)
    assert an.code == 0, an.err
    am = an.json()["metrics"]
    assert {"client1_saturation_round", "client2_acf_stability", "client3_last_stabilisation"} <= set(am)
    an_run = runs / "fed-memory" / f"analyze-{an.json()['run_id'][:12]}"
    assert "our proxies" in (an_run / "paper.md").read_text() and (an_run / "acf_stability.csv").exists()


@pytest.mark.slow
def test_real_architectures_smoke(cli, runs):
    """The card's smoke 1 at the size a minute allows: ResNet50 / DenseNet121 / AlexNet-skip, random init, 64×64,
    2 rounds × 2 epochs, batch 8. Scenario 1: only the head is averaged (identical) and the backbones differ; CME
    archive (epochs, 16384) per round. Scenario 4 with DenseNet121 on every client (BatchNorm buffers and
    num_batches_tracked travel too): identical state dicts after aggregation. (ResNet50 × 3 in scenario 4 is the same
    code path and costs minutes on two cores.)"""
    real = ("-o", "model.arch_set=real", *TINY)
    r1 = _train(cli, runs, "-o", "fed.scenario=1", "-o", "dataset.subset=24", "-o", "train.batch_size=8", *real)
    assert r1.code == 0, r1.err
    m1 = r1.json()["metrics"]
    assert m1["shared_identical"] == 1 and m1["backbones_differ"] == 1 and m1["cov_symmetric_psd"] == 1
    assert m1["cme_shape_ok"] == 1
    assert [m1[f"client{k}_arch"] for k in (1, 2, 3)] == ["resnet50", "densenet121", "alexnet_skip"]
    r4 = _train(cli, runs, "-o", "fed.scenario=4", "-o", "dataset.subset=12", "-o", "train.batch_size=16",
                "-o", "model.archs=[densenet121]", *real)
    assert r4.code == 0, r4.err
    m4 = r4.json()["metrics"]
    assert m4["states_identical"] == 1 and m4["client3_arch"] == "densenet121" and m4["cme_shape_ok"] == 1


# -- bad input -------------------------------------------------------------------------------------------------------
def test_fewer_clients_than_architectures_is_a_manifest_error(cli, runs):
    r = _train(cli, runs, "-o", "fed.clients=2")
    assert r.code == 2 and "fed.clients 2 for 3 architectures" in r.err and "Traceback" not in r.err
    assert len(r.err.strip().splitlines()) == 1 and not _complete(runs)


def test_mixed_architectures_in_a_homogeneous_scenario_is_refused(cli, runs):
    r = _train(cli, runs, "-o", "fed.scenario=4", "-o", "model.archs=[cnn4,densenet_tiny,cnn4]")
    assert r.code == 2 and "averages whole models" in r.err and not _complete(runs)


def test_unknown_class_folder_names_it(cli, runs, tmp_path):
    from medrun.datasets import brain_tumor_mri

    root = brain_tumor_mri.make_fixture(tmp_path / "data", 0, per_class=(4, 1))
    (root / "Testing" / "astrocytoma").mkdir()
    r = cli("train", "fed-memory", "--dataset", "brain-tumor-mri", "--data-dir", root, "--runs-dir", runs)
    assert r.code == 3 and "astrocytoma" in r.err and "not one of the card's classes" in r.err
    assert "Traceback" not in r.err and not _complete(runs)


def test_missing_testing_folder_and_missing_data(cli, runs, tmp_path):
    from medrun.datasets import brain_tumor_mri

    root = brain_tumor_mri.make_fixture(tmp_path / "data", 0, per_class=(4, 1))
    import shutil

    shutil.rmtree(root / "Testing")
    r = cli("train", "fed-memory", "--dataset", "brain-tumor-mri", "--data-dir", root, "--runs-dir", runs)
    assert r.code == 3 and "no Testing/ folder" in r.err and not _complete(runs)
    r = cli("train", "fed-memory", "--dataset", "brain-tumor-mri", "--data-dir", tmp_path / "nowhere",
            "--runs-dir", runs)
    assert r.code == 3 and "nowhere" in r.err and "--fixture" in r.err and not _complete(runs)


def test_client_fractions_must_match_clients(cli, runs):
    r = _train(cli, runs, "-o", "fed.client_fractions=[0.5,0.5]")
    assert r.code == 2 and "client_fractions" in r.err and not _complete(runs)


def test_unequal_shares_follow_client_fractions():
    from medrun.pipelines.fed_memory.config import FedMemoryManifest
    from medrun.pipelines.fed_memory.pipeline import FedMemory

    validate = FedMemoryManifest.model_validate
    m = validate({"pipeline": "fed-memory", "dataset": {"name": "brain-tumor-mri"},
                  "fed": {"client_fractions": [0.5, 0.25, 0.25]}})

    class S:
        def __init__(self, label):
            self.label = label

    samples = [S(i % 4) for i in range(80)]
    shares = FedMemory(m).shares(samples)
    assert [len(a) + len(b) for a, b in shares] == [40, 20, 20]
    assert not set(shares[0][0]) & set(shares[1][0]) and not set(shares[0][1]) & set(shares[0][0])
    same = FedMemory(validate({"pipeline": "fed-memory", "dataset": {"name": "brain-tumor-mri"},
                               "fed": {"scenario": 3}})).shares(samples)
    assert [len(a) + len(b) for a, b in same] == [80, 80, 80]
    json.dumps([list(map(int, a)) for a, _ in same])  # plain ints (recorded in data.lock.json)


@pytest.mark.slow
def test_imagenet_weights_load_through_the_safe_loader(tmp_path):
    """``model.weights_dir``: torchvision-named ImageNet files fill the backbones (DenseNet's old ``norm.1`` keys and
    AlexNet's ``features.N`` indices mapped); a pickle of Python objects is refused; a missing file is an EnvError."""
    import re

    from medrun.errors import EnvError, UsageError

    src = {a: nets.ClientNet(a) for a in ("resnet50", "densenet121", "alexnet_skip")}
    tv = {"resnet50": {**{k: v for k, v in src["resnet50"].backbone.state_dict().items()},
                       "fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}}
    dense = {}
    for k, v in src["densenet121"].backbone.features.state_dict().items():
        k = re.sub(r"\.layers\.(norm|relu|conv)([12])\.", r".\1.\2.", k)  # torchvision's original key names
        dense[f"features.{k}"] = v
    tv["densenet121"] = {**dense, "classifier.weight": torch.zeros(1000, 1024)}
    back = {"stem.0": "features.0", "stem.3": "features.3", "stem.6": "features.6", "conv4": "features.8",
            "conv5": "features.10"}
    tv["alexnet_skip"] = {f"{back[k.rsplit('.', 1)[0]]}.{k.rsplit('.', 1)[1]}": v
                          for k, v in src["alexnet_skip"].backbone.state_dict().items() if k.rsplit(".", 1)[0] in back}
    files = {"resnet50": "resnet50-0676ba61.pth", "densenet121": "densenet121-a639ec97.pth",
             "alexnet_skip": "alexnet-owt-7be5be79.pth"}
    for arch, state in tv.items():
        torch.save(state, tmp_path / files[arch])
        fresh = nets.ClientNet(arch)
        loaded = nets.load_imagenet(fresh, tmp_path)
        want = src[arch].backbone.state_dict()
        got = fresh.backbone.state_dict()
        assert len(loaded) >= len(tv[arch]) - 2
        same = [k for k in want if torch.equal(want[k], got[k])]
        assert len(same) >= len(loaded), arch
    evil = tmp_path / "evil"
    evil.mkdir()
    torch.save({"conv1.weight": torch.zeros(1), "note": object()}, evil / "resnet50-x.pth")
    with pytest.raises(UsageError, match="Python objects"):
        nets.load_imagenet(nets.ClientNet("resnet50"), evil)
    with pytest.raises(EnvError, match="densenet121"):
        nets.load_imagenet(nets.ClientNet("densenet121"), tmp_path / "evil")


# -- own images (issue 21) ------------------------------------------------------------------------------------------
def test_own_images_train_the_clients_and_predict_unlabelled_files(cli, runs, unlabelled_images):
    """``--dataset imagefolder``: the clients' pool is the class folders (16-bit PNG, float TIFF, DICOM); predict
    gives one row per readable file with every client's class."""
    from pathlib import Path

    base = ("train", "fed-memory", "--dataset", "imagefolder", "--fixture", "--runs-dir", runs, "--json",
            "-o", "train.rounds=1", "-o", "train.epochs=1", "-o", "fed.scenario=1")  # a third of the pool each
    r = cli(*base)
    assert r.code == 0, r.err
    out = r.json()
    assert "skipped 1 file(s) that are not images" in r.err and out["metrics"]["shared_identical"] == 1
    new = unlabelled_images
    p = cli("predict", "fed-memory", "--run", out["run_id"], "-o", f"predict.input={new}", "--runs-dir", runs,
            "--json")
    assert p.code == 0, p.err
    assert f"skipped {new / 'notes.txt'}: not one of" in p.err
    rows = (Path(p.json()["run_dir"]) / "per_case.csv").read_text().splitlines()
    assert rows[0].startswith("file,pred,prob_centre,prob_left,prob_right,client1_pred") and len(rows) == 3


def test_image_too_small_for_alexnet_skip_is_a_manifest_error(cli, runs):
    """At 32 px AlexNet-skip's stem and pools leave nothing: refused with the size it needs, not a failed round."""
    r = _train(cli, runs, "-o", "dataset.img_size=32")
    assert r.code == 2 and "too small for alexnet_skip_tiny (at least 63)" in r.err and "Traceback" not in r.err
