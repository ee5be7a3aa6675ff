"""epilepsy-mtl end to end on the fixture: learning, eval/predict/explain on the train run, the cv and
leave-one-patient-out protocols, the paper's metrics against sklearn, and the bad inputs of the issue."""

import json
import math
import shutil

import numpy as np
import pytest

FX = ("--dataset", "ncnp-ecog", "--fixture")
# the learning check: the fixture manifest (lr 0.005, momentum 0.9, L1 0.004) on the train stage's hold-out, 30 epochs
FAST = ("-o", "train.epochs=30", "-o", "eval.repairings=3")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import contextlib
    import io

    from medrun.cli.main import main

    runs = tmp_path_factory.mktemp("epi-runs")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["train", "epilepsy-mtl", *FX, *FAST, "--runs-dir", str(runs), "--json"])
    assert code == 0, buf.getvalue()
    return runs, json.loads(buf.getvalue())


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory):
    from medrun.datasets import get

    return get("ncnp-ecog").make_fixture(tmp_path_factory.mktemp("epi-data"), 0)


def test_pairing_is_seeded_and_covers_every_image():
    from medrun.pipelines.epilepsy_mtl.data import pair_indices

    a, b = pair_indices(7, 3, seed=123)
    assert len(a) == len(b) == 7 and sorted(a) == list(range(7)) and set(b) == {0, 1, 2}
    assert np.array_equal(pair_indices(7, 3, 123)[1], b) and not np.array_equal(pair_indices(7, 3, 124)[0], a)


def test_repair_each_epoch_reshuffles_partners_only():
    import torch

    from medrun.pipelines.epilepsy_mtl.data import RepairingPairs, epoch_sampler

    n = 12
    ds = RepairingPairs(torch.arange(n).float(), torch.zeros(n), torch.arange(100, 100 + n).float(), torch.zeros(n),
                        seed=1)
    sampler = epoch_sampler(n, 4, seed=1)
    pairs = {}
    for epoch in (0, 1, 0):
        sampler.set_epoch(epoch)
        pairs.setdefault(epoch, []).append({int(ds[k][0]): int(ds[k][2]) for k in sampler})
    assert pairs[0][0] == pairs[0][1]  # a function of (seed, epoch): a resumed epoch gets the same partners
    assert pairs[0][0] != pairs[1][0] and sorted(pairs[1][0].values()) == list(range(100, 100 + n))
    assert sorted(pairs[0][0]) == list(range(n))


def test_task_metrics_against_sklearn():
    from sklearn.metrics import confusion_matrix, f1_score, roc_auc_score

    from medrun.pipelines.epilepsy_mtl.pipeline import task_metrics

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(0.3 * y + rng.uniform(0, 0.7, 200), 0, 1)
    m = task_metrics(y, p)
    tn, fp, fn, tp = confusion_matrix(y, p >= 0.5).ravel()
    assert m["accuracy"] == pytest.approx((tp + tn) / 200)
    assert m["sensitivity"] == pytest.approx(tp / (tp + fn)) and m["specificity"] == pytest.approx(tn / (tn + fp))
    assert m["f1"] == pytest.approx(f1_score(y, p >= 0.5)) and m["auroc"] == pytest.approx(roc_auc_score(y, p))
    assert m["majority"] == pytest.approx(max(y.mean(), 1 - y.mean()))


@pytest.mark.slow
def test_learns_on_fixture_then_eval_predict(cli, trained):
    """Both tasks clearly above the majority class on the held-out 60 + 60 images (majority 0.72 / 0.62)."""
    runs, out = trained
    m = out["metrics"]
    assert m["accuracy_hfo"] >= 0.85 and m["accuracy_ied"] >= 0.8, m
    assert m["over_majority_hfo"] >= 0.1 and m["over_majority_ied"] >= 0.1, m
    assert m["params_keras"] == 1_068_208 and m["n_hfo"] == m["n_ied"] == 60 and m["size_mib"] > 4
    assert 0 <= m["repair_acc_sd_hfo"] < 0.1 and m["infer_ms_600"] > 0
    run = runs / "epilepsy-mtl" / f"train-{out['run_id'][:12]}"
    for f in ("checkpoints/model.safetensors", "per_case.csv", "paper.md", "figures/learning_curves.png",
              "figures/confusion_hfo.png", "figures/confusion_ied.png", "MANIFEST.sha256"):
        assert (run / f).exists(), f
    lock = json.loads((run / "data.lock.json").read_text())
    assert {k: len(v) for k, v in lock["splits"].items()} == {"train_hfo": 240, "train_ied": 240, "test_hfo": 60,
                                                              "test_ied": 60}
    paper = (run / "paper.md").read_text()
    assert "Table 1" in paper and "0.9099" in paper and "Table 3" in paper and "VGG19" in paper

    ev = cli("eval", "epilepsy-mtl", *FX, *FAST, "--runs-dir", runs, "--json")
    assert ev.code == 0, ev.err
    assert ev.json()["metrics"]["accuracy_ied"] == m["accuracy_ied"]  # same weights, same pairing
    info = json.loads((runs / "epilepsy-mtl" / f"eval-{ev.json()['run_id'][:12]}" / "run.json").read_text())
    assert info["parent"] == out["run_id"]
    pred = cli("predict", "epilepsy-mtl", *FX, *FAST, "--runs-dir", runs, "--json")
    assert pred.code == 0 and pred.json()["metrics"]["n_hfo"] == 60
    import yaml

    root = yaml.safe_load((run / "manifest.yaml").read_text())["dataset"]["root"]
    folders = cli("predict", "epilepsy-mtl", *FX, *FAST, "--runs-dir", runs, "-o", f"predict.hfo={root}/hfo/pt01/HFO",
                  "-o", f"predict.ied={root}/ied/pt01", "--json")
    assert folders.code == 0, folders.err
    assert folders.json()["metrics"]["n_hfo"] == 17 and folders.json()["metrics"]["n_ied"] == 60
    one = cli("predict", "epilepsy-mtl", *FX, *FAST, "--runs-dir", runs, "-o", "predict.hfo=/tmp")
    assert one.code == 2 and "predict.ied" in one.err


@pytest.mark.slow
def test_explain_on_parent_run(cli, trained):
    runs, out = trained
    r = cli("explain", "epilepsy-mtl", *FX, "--runs-dir", runs, "--run", out["run_id"][:10], "-o", "explain.overlays=1",
            "-o", "explain.ig_steps=8", "--json")
    assert r.code == 0, r.err
    m = r.json()["metrics"]
    assert m["n_pairs"] == 60
    for head in ("hfo", "ied"):
        for method in ("saliency", "integrated_gradients"):
            assert 0 < m[f"cross_share_{method}_{head}"] < 1
    assert m["peak_central_saliency_hfo"] >= 0.6  # the HFO map peaks on the central burst (chance 0.4)
    run = runs / "epilepsy-mtl" / f"explain-{r.json()['run_id'][:12]}"
    info = json.loads((run / "run.json").read_text())
    assert info["parent"] == out["run_id"] and info["parent_weights_sha256"]
    maps = np.load(run / "maps" / "saliency_hfo.npy")
    assert maps.shape == (60, 2, 28, 28) and maps.min() >= 0
    assert len(list((run / "figures").glob("saliency_*.png"))) == 2
    rows = (run / "per_case.csv").read_text().splitlines()
    assert len(rows) == 61 and "saliency_hfo_cross_share" in rows[0]

    # two independent networks (n_stitch 0): nothing crosses from one task's image to the other's head
    ind = cli("train", "epilepsy-mtl", *FX, "--runs-dir", runs, "-o", "model.n_stitch=0", "-o", "train.epochs=2",
              "-o", "eval.repairings=0", "-o", "train.repair_each_epoch=true", "--json")
    assert ind.code == 0, ind.err
    r0 = cli("explain", "epilepsy-mtl", *FX, "--runs-dir", runs, "--run", ind.json()["run_id"],
             "-o", "model.n_stitch=0", "-o", "explain.overlays=0", "-o", "explain.ig_steps=4", "--json")
    assert r0.code == 0, r0.err
    assert all(r0.json()["metrics"][f"cross_share_{k}_{t}"] == 0 for k in ("saliency", "integrated_gradients")
               for t in ("hfo", "ied"))


def _child_dir(runs, child):
    return runs / "epilepsy-mtl" / child["run_dir"].replace("\\", "/").rsplit("/", 1)[-1]


@pytest.mark.slow
def test_leave_one_patient_out_protocol(cli, runs):
    lopo = ("-o", "dataset.protocol=lopo", "-o", "train.epochs=1", "-o", "eval.repairings=0")
    r = cli("cv", "epilepsy-mtl", *FX, "--runs-dir", runs, *lopo, "--json")
    assert r.code == 0, r.err
    m = r.json()["metrics"]
    assert m["protocol"] == "lopo" and m["folds"] == 5 and m["n_hfo"] == 60 and m["accuracy_hfo_n"] == 5
    run = runs / "epilepsy-mtl" / f"cv-{r.json()['run_id'][:12]}"
    folds = (run / "per_fold.csv").read_text().splitlines()
    assert [line.split(",")[1] for line in folds[1:]] == ["pt01", "pt02", "pt03", "pt04", "pt05"]
    lock = json.loads((run / "data.lock.json").read_text())["splits"]
    assert all(f.split("/")[1] == "pt03" for f in lock["fold3_test_hfo"] + lock["fold3_test_ied"])
    assert "leave-one-patient-out" in (run / "paper.md").read_text() and "0.7803" in (run / "paper.md").read_text()
    # each fold is a train run of its own (weights, splits), listed in the cv run's run.json
    children = json.loads((run / "run.json").read_text())["children"]
    assert [c["name"] for c in children] == [f"fold{k}" for k in range(1, 6)]
    fold3 = json.loads((_child_dir(runs, children[2]) / "data.lock.json").read_text())["splits"]
    assert fold3["test_hfo"] == lock["fold3_test_hfo"] and all(f.split("/")[1] != "pt03" for f in fold3["train_ied"])
    assert all((_child_dir(runs, c) / "checkpoints" / "model.safetensors").exists() for c in children)
    # … so `medrun train` of that fold is the same run (reused), and eval finds it
    again = cli("train", "epilepsy-mtl", *FX, "--runs-dir", runs, *lopo, "-o", "dataset.fold=2", "--json")
    assert again.code == 0 and again.json()["reused"] and again.json()["run_id"] == children[2]["id"]
    ev = cli("eval", "epilepsy-mtl", *FX, "--runs-dir", runs, *lopo, "-o", "dataset.fold=2", "--json")
    assert ev.code == 0, ev.err
    assert ev.json()["metrics"]["accuracy_hfo"] == pytest.approx(float(folds[3].split(",")[2]), abs=1e-6)


@pytest.mark.slow
def test_ablate_stitch_units_then_cv_reuses_its_folds(cli, runs):
    small = ("-o", "dataset.folds=2", "-o", "ablate.n_stitch=[0,2]", "-o", "train.epochs=1", "-o", "eval.repairings=0")
    r = cli("ablate", "epilepsy-mtl", *FX, "--runs-dir", runs, *small, "--json")
    assert r.code == 0, r.err
    m = r.json()["metrics"]
    assert m["variants"] == ["n0", "n2"] and m["folds"] == 2
    assert m["gain_accuracy_hfo"] == pytest.approx(m["n2.accuracy_hfo"] - m["n0.accuracy_hfo"])
    run = runs / "epilepsy-mtl" / f"ablate-{r.json()['run_id'][:12]}"
    paper = (run / "paper.md").read_text()
    assert "Fig. 5" in paper and "0.1186" in paper and "| 0 |" in paper  # the paper's +11.86 points
    children = json.loads((run / "run.json").read_text())["children"]
    assert [c["name"] for c in children] == ["n0-fold1", "n0-fold2", "n2-fold1", "n2-fold2"]
    assert all((_child_dir(runs, c) / "checkpoints" / "model.safetensors").exists() for c in children)
    # the proposed model's folds are cv's folds: a cv with the same manifest trains nothing
    cv = cli("cv", "epilepsy-mtl", *FX, "--runs-dir", runs, *small, "--json")
    assert cv.code == 0, cv.err
    cv_children = json.loads((runs / "epilepsy-mtl" / f"cv-{cv.json()['run_id'][:12]}" / "run.json").read_text())
    assert [(c["id"], c["reused"]) for c in cv_children["children"]] == [(c["id"], True) for c in children[2:]]
    assert cv.json()["metrics"]["accuracy_hfo"] == pytest.approx(m["n2.accuracy_hfo"])


def _failed_run(runs, stage):
    (run,) = (runs / "epilepsy-mtl").glob(f"{stage}-*")
    assert not (run / "MANIFEST.sha256").exists()
    assert json.loads((run / "run.json").read_text())["status"] == "failed"


def test_image_of_wrong_size_is_named(cli, runs, fixture_root, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(fixture_root, data)
    bad = sorted((data / "hfo" / "pt02" / "HFO").iterdir())[4]
    from PIL import Image

    Image.new("RGB", (224, 224), "blue").save(bad)
    r = cli("train", "epilepsy-mtl", "--dataset", "ncnp-ecog", "--data-dir", data, "--runs-dir", runs)
    assert r.code == 3, r.err
    assert str(bad) in r.err and "224×224" in r.err and "227×227" in r.err and "Traceback" not in r.err
    _failed_run(runs, "train")


def test_subject_in_two_folds_is_named(cli, runs, tmp_path):
    folds = tmp_path / "folds.csv"
    folds.write_text("patient,fold\npt01,1\npt02,1\npt03,2\npt04,2\npt05,3\npt03,3\n")
    r = cli("cv", "epilepsy-mtl", *FX, "--runs-dir", runs, "-o", "dataset.protocol=lopo",
            "-o", f"dataset.fold_file={folds}")
    assert r.code == 3, r.err
    assert "patient pt03 is in two folds (2 and 3)" in r.err and str(folds) in r.err and "Traceback" not in r.err
    _failed_run(runs, "cv")


def test_patient_with_one_task_only_cannot_be_left_out(cli, runs, fixture_root, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(fixture_root, data)
    shutil.rmtree(data / "ied" / "pt05")
    (data / "labels.csv").unlink()
    r = cli("cv", "epilepsy-mtl", "--dataset", "ncnp-ecog", "--data-dir", data, "--runs-dir", runs,
            "-o", "dataset.protocol=lopo")
    assert r.code == 3 and "patient pt05 has hfo images but no ied images" in r.err and "Traceback" not in r.err


def test_wrong_layout_fails_before_anything_is_written(cli, runs, tmp_path):
    (tmp_path / "x" / "images").mkdir(parents=True)
    r = cli("train", "epilepsy-mtl", "--dataset", "ncnp-ecog", "--data-dir", tmp_path / "x", "--runs-dir", runs)
    assert r.code == 3 and "missing hfo/, ied/" in r.err and not runs.exists()


def test_dry_run_builds_the_full_model(cli, runs):
    r = cli("train", "epilepsy-mtl", *FX, "--runs-dir", runs, "--dry-run", "--json")
    assert r.code == 0, r.err
    assert r.json()["params_total"] == 1_068_112  # torch's count; Keras' (BN moving stats too) is 1,068,208


def _segments(root):
    """One burst / one noise HFO segment (2 kHz, 1 s) and one spike / one noise IED segment (1 kHz, 1 s)."""
    rng = np.random.default_rng(0)
    t = np.arange(2000) / 2000
    burst = np.sin(2 * np.pi * 400 * t) * np.exp(-((t - 0.5) ** 2) / (2 * 0.015**2)) * 20
    ti = np.arange(1000) / 1000
    spike = -40 * np.exp(-((ti - 0.5) ** 2) / (2 * 0.008**2)) + 3 * np.sin(2 * np.pi * 50 * ti)
    for task, cls, x, fs in (("hfo", "HFO", burst + rng.normal(0, 1, 2000), 2000),
                             ("hfo", "nonHFO", rng.normal(0, 1, 2000), 2000),
                             ("ied", "IED", spike + rng.normal(0, 1, 1000), 1000),
                             ("ied", "nonIED", rng.normal(0, 1, 1000), 1000)):
        (root / task / "p1" / cls).mkdir(parents=True)
        np.savez(root / task / "p1" / cls / "seg1.npz", x=x, fs=fs)


def test_render_segments_into_the_image_layout(cli, runs, tmp_path):
    from PIL import Image

    from medrun.pipelines.epilepsy_mtl.render import morlet_power

    t = np.arange(1000) / 2000
    freqs = np.arange(250, 500 + 1e-9, 0.488)
    p = morlet_power(np.sin(2 * np.pi * 333 * t), 2000, freqs)
    assert abs(freqs[p[:, 500].argmax()] - 333) < 1  # the CWT's ridge at the tone's frequency

    from medrun.datasets import ncnp_ecog

    _segments(tmp_path / "seg")
    r = cli("render", "epilepsy-mtl", "--dataset", "ncnp-ecog", "--data-dir", tmp_path / "seg", "--runs-dir", runs,
            "--json")
    assert r.code == 0, r.err
    assert r.json()["metrics"]["n_hfo"] == 2 and r.json()["metrics"]["n_ied"] == 2
    images = runs / "epilepsy-mtl" / f"render-{r.json()['run_id'][:12]}" / "images"
    data = ncnp_ecog.read(images)  # the layout the other stages read, 227×227
    assert [s.label for s in data["hfo"]] == [0, 1] and [s.label for s in data["ied"]] == [0, 1]
    hot = np.asarray(Image.open(images / "hfo" / "p1" / "HFO" / "seg1.png").convert("RGB")).astype(float)
    import matplotlib

    lut = matplotlib.colormaps["jet"](np.linspace(0, 1, 256))[:, :3] * 255  # invert the colour map
    power = ((hot[..., None, :] - lut) ** 2).sum(-1).argmin(-1)
    row, col = np.unravel_index(power.argmax(), power.shape)
    assert abs(row - 227 * (500 - 400) / 250) < 20 and abs(col - 113) < 25  # 400 Hz, mid-window
    ink = 255 - np.asarray(Image.open(images / "ied" / "p1" / "IED" / "seg1.png").convert("L")).astype(float)
    rows = np.nonzero(ink[:, 113] > 100)[0]
    assert rows.max() > 200  # the negative spike reaches the bottom of its flexible range at the centre

    (tmp_path / "seg" / "hfo" / "p1" / "HFO" / "seg1.npz").unlink()
    np.savez(tmp_path / "seg" / "hfo" / "p1" / "HFO" / "slow.npz", x=np.zeros(1000), fs=500.0)
    bad = cli("render", "epilepsy-mtl", "--dataset", "ncnp-ecog", "--data-dir", tmp_path / "seg", "--runs-dir", runs)
    assert bad.code == 3 and "slow.npz is sampled at 500 Hz" in bad.err and "Traceback" not in bad.err


# -- issue 22: Table 2's single-task CNN baselines ----------------------------------------------------------------
def test_single_task_cnn_is_one_stream_with_one_head(tmp_path):
    import torch
    from safetensors.torch import save_file

    from medrun.models.crossstitch import CrossStitchNet, keras_param_count
    from medrun.models.single_task_cnn import SingleTaskCNN
    from medrun.pipelines.epilepsy_mtl.pipeline import load_initial_weights

    multi = CrossStitchNet(n_stitch=0)
    net = SingleTaskCNN("ied")
    assert 2 * sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in multi.parameters())
    assert sum(p.numel() for p in net.parameters()) == 1576 and keras_param_count(net) == 1624
    xa, xb = torch.rand(4, 3, 28, 28, requires_grad=True), torch.rand(4, 3, 28, 28, requires_grad=True)
    la, lb = net.eval()(xa, xb)  # eval: in training the 80 % dropout on 2 units can cut every gradient
    assert lb.shape == (4, 2) and not la.any() and not la.requires_grad  # the other head: constant zeros
    torch.nn.functional.cross_entropy(lb, torch.ones(4, dtype=torch.long)).backward()
    assert xa.grad is None and xb.grad.abs().sum() > 0  # the HFO input is never read
    # a multitask run's weights initialise the single-task model's stream (the rest ignored)
    save_file({f"model.{k}": v.contiguous() for k, v in multi.state_dict().items()}, tmp_path / "multi.safetensors")
    load_initial_weights(net, tmp_path / "multi.safetensors", lambda *_: None)
    assert torch.equal(net.ied.block1[0].weight, multi.ied.block1[0].weight)


@pytest.mark.slow
def test_single_task_baseline_learns_on_fixture(cli, runs):
    """model.task=hfo: the single-task CNN on the hold-out, 30 epochs as the multitask learning check; IED unscored."""
    r = cli("train", "epilepsy-mtl", *FX, *FAST, "-o", "model.task=hfo", "--runs-dir", runs, "--json")
    assert r.code == 0, r.err
    m = r.json()["metrics"]
    assert m["accuracy_hfo"] >= 0.85 and m["over_majority_hfo"] >= 0.1, m
    assert math.isnan(m["accuracy_ied"]) and m["n_ied"] == 0 and m["params_keras"] == 1624 and m["task"] == "hfo"
    rows = (runs / "epilepsy-mtl" / f"train-{r.json()['run_id'][:12]}" / "per_case.csv").read_text().splitlines()
    assert len(rows) == 61 and all(line.startswith("hfo,") for line in rows[1:])


@pytest.mark.slow
def test_baselines_stage_sets_single_task_runs_beside_table2(cli, runs):
    small = ("-o", "dataset.folds=2", "-o", "train.epochs=1", "-o", "eval.repairings=0")
    r = cli("baselines", "epilepsy-mtl", *FX, "--runs-dir", runs, *small, "--json")
    assert r.code == 0, r.err
    m = r.json()["metrics"]
    assert m["gain_accuracy_ied"] == pytest.approx(m["proposed.accuracy_ied"] - m["single_task.accuracy_ied"])
    run = runs / "epilepsy-mtl" / f"baselines-{r.json()['run_id'][:12]}"
    children = json.loads((run / "run.json").read_text())["children"]
    assert [c["name"] for c in children] == ["fold1", "fold2", "hfo-fold1", "hfo-fold2", "ied-fold1", "ied-fold2"]
    paper = (run / "paper.md").read_text()
    assert "| Single-task CNN (this run) |" in paper and "| VGG19 | 89.2000 |" in paper and "not run here" in paper
    single = json.loads((_child_dir(runs, children[2]) / "metrics.json").read_text())
    assert single["task"] == "hfo" and single["n_ied"] == 0 and single["params_keras"] == 1624
