"""ad-lite: the architecture at full size, learning on the fixture, eval/reuse, and bad input."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from medrun.models.adlite import AdLiteNet


def _train_cmd(runs, *extra) -> list[str]:
    """`medrun train ad-lite --dataset oasis --fixture` in a fresh interpreter, into ``runs``."""
    return [sys.executable, "-m", "medrun.cli.main", "train", "ad-lite", "--dataset", "oasis", "--fixture",
            "--runs-dir", str(runs), *extra]


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_parameter_counts_match_card():
    assert n_params(AdLiteNet(4)) == 232138
    assert n_params(AdLiteNet(3)) == 231945


def test_full_size_shapes():
    net = AdLiteNet(4).eval()
    x = torch.rand(2, 3, 224, 224) * 255
    c1 = net.stem(x)
    assert c1.shape == (2, 64, 28, 28)
    assert net.main(c1).shape == (2, 128, 7, 7) and net.pcb(c1).shape == (2, 64, 7, 7)
    assert net(x).shape == (2, 4)


def test_tx_layer_modes():
    x = torch.randn(2, 64, 4, 4)
    code, paper = AdLiteNet(4, tx="code"), AdLiteNet(4, tx="paper")
    assert torch.allclose(code.pcb[0](x), -0.8 * x)
    assert torch.allclose(paper.pcb[0](x), 0.8 * (255 - x))
    assert n_params(AdLiteNet(4, pcb=False)) == 232138 - 37152 - 64 * 4  # Table 2 ablation: no pcb branch


def test_lr_schedule_is_keras_style():
    from medrun.pipelines.tasks.classification import LitClassifier

    m = LitClassifier(torch.nn.Linear(2, 2), lr=1.0, decay_from=4, decay_factor=0.95)
    assert [round(m.lr_at(e), 6) for e in range(7)] == [1, 1, 1, 1, 0.95, 0.9025, 0.857375]


@pytest.mark.slow
def test_learns_on_fixture_then_eval_and_reuse(cli, runs):
    """The card's smoke run (oasis fixture, 64², 8 epochs): test accuracy ≥ 0.6 (chance 0.25), macro-F1 > 0.4."""
    r = cli("train", "ad-lite", "--dataset", "oasis", "--fixture", "--runs-dir", runs, "--json")
    assert r.code == 0, r.err
    out = r.json()
    assert out["status"] == "complete" and not out["reused"]
    assert out["metrics"]["accuracy"] >= 0.6 and out["metrics"]["f1_macro"] > 0.4, out["metrics"]
    run = runs / "ad-lite" / f"train-{out['run_id'][:12]}"
    for f in ("manifest.yaml", "run.json", "env.json", "data.lock.json", "metrics.json", "per_case.csv", "paper.md",
              "checkpoints/model.safetensors", "checkpoints/last.ckpt", "figures/learning_curves.png",
              "figures/confusion_matrix.png", "logs/metrics.csv", "logs/events.jsonl", "MANIFEST.sha256"):
        assert (run / f).exists(), f
    lock = json.loads((run / "data.lock.json").read_text())
    assert {len(v) for v in lock["splits"].values()} == {99, 25, 31}
    assert "Table 1" in (run / "paper.md").read_text()

    again = cli("train", "ad-lite", "--dataset", "oasis", "--fixture", "--runs-dir", runs, "--json").json()
    assert again["reused"] and again["run_id"] == out["run_id"]

    ev = cli("eval", "ad-lite", "--dataset", "oasis", "--fixture", "--runs-dir", runs, "--json")
    assert ev.code == 0, ev.err
    ev_run = runs / "ad-lite" / f"eval-{ev.json()['run_id'][:12]}"
    assert json.loads((ev_run / "run.json").read_text())["parent"] == out["run_id"]
    assert ev.json()["metrics"]["accuracy"] == out["metrics"]["accuracy"]  # same weights, same test split

    val = cli("eval", "ad-lite", "--dataset", "oasis", "--fixture", "--runs-dir", runs, "--split", "val", "--json")
    assert val.code == 0 and val.json()["metrics"]["split"] == "val" and val.json()["run_id"] != ev.json()["run_id"]

    pred = cli("predict", "ad-lite", "--dataset", "oasis", "--fixture", "--runs-dir", runs, "--json")
    assert pred.code == 0 and pred.json()["metrics"]["n"] == 31

    ck = cli("eval", "ad-lite", "--dataset", "oasis", "--fixture", "--runs-dir", runs,
             "--checkpoint", run / "checkpoints" / "model.safetensors", "--json")
    assert ck.code == 0 and ck.json()["metrics"]["accuracy"] == out["metrics"]["accuracy"]

    wrong = cli("eval", "ad-lite", "--dataset", "oasis", "--fixture", "--runs-dir", runs,
                "--checkpoint", run / "checkpoints" / "model.safetensors", "-o", "model.num_classes=3")
    assert wrong.code == 2 and "num_classes" in wrong.err

    dry = cli("train", "ad-lite", "--dataset", "oasis", "--fixture", "--runs-dir", runs, "-o", "train.epochs=2",
              "--dry-run", "--json").json()
    assert dry["status"] == "dry-run" and dry["run_id"] != out["run_id"] and dry["params_total"] == 232138
    assert not (runs / "ad-lite" / f"train-{dry['run_id'][:12]}").exists()


def test_eval_without_train_run_says_what_to_do(cli, runs):
    r = cli("eval", "ad-lite", "--dataset", "adni", "--fixture", "--runs-dir", runs)
    assert r.code == 2 and "medrun train ad-lite --dataset adni --fixture" in r.err


def test_missing_data_dir_explains(cli, runs, tmp_path):
    r = cli("train", "ad-lite", "--dataset", "oasis", "--data-dir", tmp_path / "nowhere", "--runs-dir", runs)
    assert r.code == 3
    assert "nowhere" in r.err and "imagesoasis" in r.err and "--fixture" in r.err and "Traceback" not in r.err


def test_wrong_layout(cli, runs, tmp_path):
    (tmp_path / "x" / "stuff").mkdir(parents=True)
    r = cli("train", "ad-lite", "--dataset", "adni", "--data-dir", tmp_path / "x", "--runs-dir", runs)
    assert r.code == 3 and "does not have the ADNI-Extracted-Axial layout" in r.err
    assert not runs.exists()  # failed before anything was written


def test_corrupt_image_names_the_file(cli, runs, tmp_path):
    from medrun.datasets import get

    root = get("adni").make_fixture(tmp_path / "d", 0)
    bad = sorted((root / "CI").iterdir())[3]
    bad.write_bytes(b"not an image at all")
    r = cli(
        "train", "ad-lite", "--dataset", "adni", "--data-dir", root, "--runs-dir", runs, "-o", "dataset.img_size=64"
    )
    assert r.code == 3 and bad.name in r.err and "Traceback" not in r.err
    assert not runs.exists()  # the header check in plan() finds it before a run directory opens (issue 14)


def test_num_classes_mismatch(cli, runs):
    r = cli("train", "ad-lite", "--dataset", "oasis", "--fixture", "--runs-dir", runs, "-o", "model.num_classes=3")
    assert r.code == 2 and "-o model.num_classes=4" in r.err


def test_unwritable_runs_dir(cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = cli("train", "ad-lite", "--dataset", "oasis", "--fixture", "--runs-dir", blocker / "runs")
    assert r.code == 4 and "--runs-dir" in r.err


@pytest.mark.slow
def test_ctrl_c_exits_130_and_leaves_run_incomplete(tmp_path):
    runs = tmp_path / "runs"
    proc = subprocess.Popen(
        _train_cmd(runs, "-o", "train.epochs=200", "-o", "dataset.img_size=32"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    deadline = time.time() + 180  # generous: CI machines can be loaded
    events = None
    while time.time() < deadline:
        found = list(runs.glob("ad-lite/train-*/logs/events.jsonl"))
        # after the first epoch's event and its checkpoint (written just after the event: a loaded machine can
        # deliver the signal between the two)
        ckpt = found[0].parent.parent / "checkpoints" / "last.ckpt" if found else None
        if found and '"epoch"' in found[0].read_text() and ckpt.exists():
            events = found[0]
            break
        time.sleep(0.3)
    assert events is not None, proc.communicate(timeout=5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    run = events.parent.parent
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    assert not (run / "MANIFEST.sha256").exists() and (run / "checkpoints" / "last.ckpt").exists()
    assert "resumes" in err and "Traceback" not in err
    shutil.rmtree(runs)


def test_learning_curves_read_train_and_val_series(tmp_path):
    from medrun.pipelines.report import learning_curves, read_series

    csv = tmp_path / "metrics.csv"
    csv.write_text("epoch,step,train_acc,train_loss,val_acc,val_loss,train_loss_step\n"
                   "0,6,,,0.3,1.4,\n0,6,0.6,0.9,,,0.8\n1,13,,,0.5,1.1,\n1,13,0.9,0.4,,,0.3\n")
    series = read_series(csv)
    assert sorted(series) == ["train_acc", "train_loss", "val_acc", "val_loss"]
    assert series["train_loss"] == [(0.0, 0.9), (1.0, 0.4)]
    assert learning_curves(csv, tmp_path / "lc.png").stat().st_size > 0


def test_run_id_depends_on_world_size_not_device_list(cli, runs):
    """The id changes with the effective batch (world size), not with how the devices are named."""
    def rid(*extra):
        r = cli(
            "train", "ad-lite", "--dataset", "oasis", "--fixture", "--runs-dir", runs, "--dry-run", "--json", *extra
        )
        assert r.code == 0, r.err
        return r.json()["run_id"]

    one = rid("--accelerator", "cpu")
    assert rid("--accelerator", "cpu", "--devices", "1") == one == rid("--accelerator", "cpu", "--devices", "auto")
    two = rid("--accelerator", "cpu", "--devices", "2", "--strategy", "ddp")
    assert two != one
    # a device list names GPUs (Lightning refuses one on CPU, before any run directory): the id sees only its length
    from medrun.pipelines.runner import identity_manifest

    listed = {"trainer": {"accelerator": "gpu", "devices": [0, 1], "num_nodes": 1, "strategy": "ddp"}}
    counted = {"trainer": {"accelerator": "gpu", "devices": 2, "num_nodes": 1, "strategy": "ddp"}}
    assert identity_manifest(listed) == identity_manifest(counted) != identity_manifest({"trainer": {"devices": 1}})
    assert rid("--accelerator", "cpu", "--devices", "1", "--num-nodes", "2", "--strategy", "ddp") == two


@pytest.mark.slow
def test_bf16_mixed_trains_on_cpu(cli, runs):
    r = cli("train", "ad-lite", "--dataset", "oasis", "--fixture", "--runs-dir", runs, "--json", "--accelerator", "cpu",
            "--precision", "bf16-mixed", "-o", "train.epochs=1")
    assert r.code == 0, r.err
    run = runs / "ad-lite" / f"train-{r.json()['run_id'][:12]}"
    assert "precision: bf16-mixed" in (run / "manifest.yaml").read_text()
    from safetensors.torch import load_file

    weights = load_file(str(run / "checkpoints" / "model.safetensors"))
    floats = [t for t in weights.values() if t.is_floating_point()]
    assert floats and all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in floats)  # fp32 master weights


@pytest.mark.slow
def test_ddp_two_cpu_processes_write_one_run_dir(runs, tmp_path):
    """`--devices 2 --strategy ddp` on CPU: Lightning re-runs the command as rank 1 (gloo); only rank 0 writes a run
    directory, the other rank leaves nothing behind, and each rank saw half the training batches."""
    env = {**os.environ, "MEDRUN_PLAIN": "1", "TMPDIR": str(tmp_path)}
    cmd = _train_cmd(runs, "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "-o", "train.epochs=1",
                     "--json")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count('"run_dir"') == 1  # one report, from rank 0
    dirs = list((runs / "ad-lite").iterdir())
    assert len(dirs) == 1 and (dirs[0] / "MANIFEST.sha256").exists()
    info = json.loads((dirs[0] / "run.json").read_text())
    assert info["status"] == "complete" and info["world_size"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("medrun-rank")]
    n_train = len(json.loads((dirs[0] / "data.lock.json").read_text())["splits"]["train"])
    steps = {int(line.split(",")[1]) for line in (dirs[0] / "logs" / "metrics.csv").read_text().splitlines()[1:]}
    per_rank = math.ceil(math.ceil(n_train / 2) / 16)  # DistributedSampler pads to ceil(n/2) per rank; batch 16
    assert steps == {per_rank - 1}


@pytest.mark.slow
def test_log_mlflow_records_the_run(cli, runs, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    r = cli("train", "ad-lite", "--dataset", "oasis", "--fixture", "--runs-dir", runs, "--json", "-o", "train.epochs=2",
            "--log", "mlflow")
    assert r.code == 0, r.err
    import mlflow

    mlflow.set_tracking_uri(f"file:{runs.resolve() / '.mlruns'}")
    found = mlflow.search_runs(experiment_names=["ad-lite"], output_format="list")
    assert len(found) == 1
    run = found[0]
    assert run.data.tags["medrun.run_id"] == r.json()["run_id"] and run.info.status == "FINISHED"
    assert run.data.metrics["final/accuracy"] == pytest.approx(r.json()["metrics"]["accuracy"])
    assert "val_acc" in run.data.metrics and run.data.params["train.epochs"] == "2"
    bad = cli("train", "ad-lite", "--dataset", "oasis", "--fixture", "--runs-dir", runs, "--log", "wandb")
    assert bad.code == 2 and "mlflow" in bad.err


@pytest.mark.slow
def test_kill_mid_epoch_and_resume_is_bitwise_identical(tmp_path):
    """2 epochs straight, against 1 epoch + SIGKILL inside epoch 2 + the same command again: identical weights.
    The kill lands at optimizer step 11 of 14 (7 per epoch); the last checkpoint then is step 10's."""
    from safetensors.torch import load_file

    def train(runs, **env):
        cmd = _train_cmd(runs, "-o", "train.epochs=2", "-o", "trainer.checkpoint_every_n_steps=2", "-o",
                         "dataset.img_size=32", "--json")  # 32 px: the steps per epoch depend on the count, not size
        return subprocess.run(cmd, env={**os.environ, "MEDRUN_PLAIN": "1", **env}, capture_output=True, text=True,
                              timeout=300)

    straight = train(tmp_path / "a")
    assert straight.returncode == 0, straight.stderr[-2000:]
    killed = train(tmp_path / "b", MEDRUN_TEST_KILL_AT_STEP="11")
    assert killed.returncode == -signal.SIGKILL
    run_b = next((tmp_path / "b" / "ad-lite").glob("train-*"))
    ckpt = torch.load(run_b / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 10 and ckpt["epoch"] == 1  # inside epoch 2
    assert not (run_b / "MANIFEST.sha256").exists()
    resumed = train(tmp_path / "b")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads(resumed.stdout)["run_id"] == json.loads(straight.stdout)["run_id"]
    run_a = next((tmp_path / "a" / "ad-lite").glob("train-*"))
    a, b = (load_file(str(r / "checkpoints" / "model.safetensors")) for r in (run_a, run_b))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (
        json.loads((run_a / "metrics.json").read_text())["accuracy"]
        == json.loads(resumed.stdout)["metrics"]["accuracy"]
    )


@pytest.mark.slow
def test_last_ckpt_of_another_run_is_refused(tmp_path):
    """A killed run's last.ckpt replaced by one that another run wrote (its stamped run id differs) is refused."""
    runs = tmp_path / "runs"
    base = _train_cmd(runs, "-o", "train.epochs=1", "-o", "trainer.checkpoint_every_n_steps=1",
                      "-o", "dataset.img_size=32")
    env = {**os.environ, "MEDRUN_PLAIN": "1"}
    killed = subprocess.run(
        base, env={**env, "MEDRUN_TEST_KILL_AT_STEP": "2"}, capture_output=True, text=True, timeout=300
    )
    assert killed.returncode == -signal.SIGKILL
    mine = next(p for p in runs.glob("ad-lite/train-*") if not (p / "MANIFEST.sha256").exists())
    ckpt = torch.load(mine / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["medrun_run_id"] == json.loads((mine / "run.json").read_text())["id"]
    ckpt["medrun_run_id"] = "0" * 64  # what a last.ckpt copied from another run carries
    torch.save(ckpt, mine / "checkpoints" / "last.ckpt")
    before = (mine / "checkpoints" / "last.ckpt").read_bytes()
    again = subprocess.run(base, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "was written by run" in again.stderr and "--force" in again.stderr
    assert "Traceback" not in again.stderr and not (mine / "MANIFEST.sha256").exists()
    assert (mine / "checkpoints" / "last.ckpt").read_bytes() == before


# -- issue 22: Table 2's ablation and Table 1's baselines --------------------------------------------------------
def test_ablated_network_has_194730_parameters():
    """Table 2: without the parallel concatenation block (main branch only, Linear 128→4)."""
    assert n_params(AdLiteNet(4, pcb=False)) == 194730


# references: torchvision's models (sum of parameters) and Keras applications (trainable count, which is the same
# sum); "at the paper's class count" = 4 classes with the Keras fine-tuning head (include_top=False + pool + Dense)
BASELINE_PARAMS = [
    # arch, kwargs, count, reference
    ("mobilenet_v2", {"num_classes": 1000}, 3_504_872, "torchvision mobilenet_v2 / Keras MobileNetV2 trainable"),
    ("mobilenet_v2", {"num_classes": 4}, 2_228_996, "3,504,872 − Linear(1280,1000) + Linear(1280,4)"),
    ("vgg16", {"num_classes": 1000, "head": "classic"}, 138_357_544, "torchvision vgg16"),
    ("vgg16", {"num_classes": 4}, 14_716_740, "Keras VGG16 notop 14,714,688 + Dense(512,4); paper 147.17 lakh"),
    ("xception", {"num_classes": 1000}, 22_855_952, "Keras Xception trainable"),
    ("xception", {"num_classes": 4}, 20_815_148, "Keras notop trainable 20,806,952 + Dense(2048,4); paper 208.15 lakh"),
    ("densenet121", {"num_classes": 1000}, 7_978_856, "torchvision densenet121 / Keras DenseNet121 trainable"),
    ("densenet121", {"num_classes": 4}, 6_957_956, "7,978,856 − Linear(1024,1000) + Linear(1024,4)"),
]


@pytest.mark.parametrize("arch,kw,count,ref", BASELINE_PARAMS, ids=[f"{a}-{k['num_classes']}" for a, k, *_ in
                                                                    BASELINE_PARAMS])
def test_baseline_parameter_counts_match_references(arch, kw, count, ref):
    from medrun import models

    name = {"mobilenet_v2": "mobilenet-v2"}.get(arch, arch)
    with torch.device("meta"):  # counting needs no memory
        net = models.create(name, **kw)
    assert n_params(net) == count, ref


def test_baselines_run_at_the_paper_input_from_raw_pixels():
    from medrun.models.cnn_baselines import ARCHS, build

    x = torch.rand(1, 3, 224, 224) * 255
    with torch.no_grad():
        for arch in ARCHS:
            net = build(arch, 4).eval()
            assert net(x).shape == (1, 4), arch
            assert set(net.state_dict()) == {f"net.{k}" for k in net.net.state_dict()}  # scaling has no state


def test_user_weights_load_through_the_safe_loader(tmp_path):
    """torchvision-style state dicts (1000-class heads) initialise a 4-class baseline: everything but the
    classifier, which keeps its init; files holding Python objects or another architecture are refused."""
    import pickle

    from medrun.errors import UsageError
    from medrun.models.cnn_baselines import build, network
    from medrun.pipelines.ad_lite.pipeline import load_initial_weights

    src = network("mobilenet_v2", 1000)
    torch.save(src.state_dict(), tmp_path / "mnv2.pth")
    net = build("mobilenet_v2", 4)
    head = net.net.classifier[1].weight.clone()
    log = []
    load_initial_weights(net, "mobilenet_v2", tmp_path / "mnv2.pth", log.append)
    assert torch.equal(net.net.features[5].conv[1][0].weight, src.features[5].conv[1][0].weight)
    assert torch.equal(net.net.classifier[1].weight, head) and "classifier.1.weight" in log[0]

    import re

    dense = network("densenet121", 1000)  # torchvision's file: denselayerN.norm.1.weight, MONAI's .layers.norm1
    tv = {re.sub(r"\.layers\.(norm|relu|conv)([12])\.", r".\1.\2.", k): v for k, v in dense.state_dict().items()}
    assert "features.denseblock1.denselayer1.norm.1.weight" in tv
    torch.save(tv, tmp_path / "densenet.pth")
    net = load_initial_weights(build("densenet121", 4), "densenet121", tmp_path / "densenet.pth", log.append)
    assert torch.equal(net.net.features.denseblock1.denselayer1.layers.conv1.weight,
                       dense.features.denseblock1.denselayer1.layers.conv1.weight)

    with pytest.raises(UsageError, match="do not fit model.arch=vgg16"):
        load_initial_weights(build("vgg16", 4), "vgg16", tmp_path / "mnv2.pth")
    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"x": object()}))
    with pytest.raises(UsageError):
        load_initial_weights(build("vgg16", 4), "vgg16", tmp_path / "evil.pth")


TINY = ("--dataset", "ad", "--fixture", "-o", "dataset.img_size=32", "-o", "train.epochs=1")


@pytest.mark.slow
def test_ablate_stage_runs_both_variants_beside_table2(cli, runs):
    r = cli("ablate", "ad-lite", *TINY, "--runs-dir", runs, "--json")
    assert r.code == 0, r.err
    m = r.json()["metrics"]
    assert m["with_pcb.params_total"] == 232138 and m["without_pcb.params_total"] == 194730
    assert m["gain_accuracy"] == pytest.approx(m["with_pcb.accuracy"] - m["without_pcb.accuracy"])
    page = (runs / "ad-lite" / f"ablate-{r.json()['run_id'][:12]}" / "paper.md").read_text()
    assert "Table 2" in page and "| without pcb | paper | 0.9600 |" in page
    # the full variant is the plain train run of the same manifest
    t = cli("train", "ad-lite", *TINY, "--runs-dir", runs, "--json").json()
    assert t["reused"] and t["run_id"][:12] in page


@pytest.mark.slow
def test_baselines_stage_with_user_weights(cli, runs, tmp_path):
    from safetensors.torch import save_file

    from medrun.models.cnn_baselines import network

    save_file(network("mobilenet_v2", 1000).state_dict(), tmp_path / "mnv2.safetensors")
    r = cli("baselines", "ad-lite", *TINY, "-o", "baselines.archs=[adlite, mobilenet_v2]",
            "-o", f"baselines.weights={{mobilenet_v2: {tmp_path / 'mnv2.safetensors'}}}", "--runs-dir", runs, "--json")
    assert r.code == 0, r.err
    m = r.json()["metrics"]
    assert m["models"] == ["adlite", "mobilenet_v2"]
    assert m["adlite.params_total"] == 232138 and m["mobilenet_v2.params_total"] == 2228996
    page = (runs / "ad-lite" / f"baselines-{r.json()['run_id'][:12]}" / "paper.md").read_text()
    assert "| mobilenet_v2 |" in page and "from model.weights" in page
    assert "not reproduced: no layer description" in page and "| vgg16 | — | 0.6480 |" in page
    # the child is the run `medrun train -o model.arch=mobilenet_v2 -o model.weights=…` makes, with the file's hash
    t = cli("train", "ad-lite", *TINY, "-o", "model.arch=mobilenet_v2", "-o",
            f"model.weights={tmp_path / 'mnv2.safetensors'}", "--runs-dir", runs, "--json").json()
    assert t["reused"] and len(t["metrics"]["initial_weights_sha256"]) == 64


@pytest.mark.slow
def test_own_images_in_class_folders_learn_and_unlabelled_files_predict(cli, runs, tmp_path):
    """``--dataset imagefolder``: 16-bit PNG, float TIFF and DICOM files with 12-bit values, one explicit window;
    then predict on a folder of unlabelled files of each kind, where a text file is skipped with a line."""
    from pathlib import Path

    r = cli("train", "ad-lite", "--dataset", "imagefolder", "--fixture", "-o", "dataset.img_size=32",
            "-o", "train.epochs=4", "--runs-dir", runs, "--json")
    assert r.code == 0, r.err
    out = r.json()
    assert out["metrics"]["accuracy"] >= 0.6, out["metrics"]  # chance is 1/3
    assert "skipped 1 file(s) that are not images" in r.err
    manifest = (Path(out["run_dir"]) / "manifest.yaml").read_text()
    assert "window" in manifest and "4095" in manifest  # the intensity handling is part of the run's record
    assert json.loads((Path(out["run_dir"]) / "run.json").read_text())["intensity"] == "window (0.0, 4095.0)"
    src = next((Path(os.environ["MEDRUN_CACHE"]) / "fixtures").glob("imagefolder-*")) / "own-images"
    new = tmp_path / "new"
    new.mkdir()
    for f in ("left/left_000.png", "centre/centre_001.tif", "right/right_002.dcm"):
        shutil.copy(src / f, new)
    (new / "notes.txt").write_text("not an image")
    p = cli("predict", "ad-lite", "--run", out["run_id"], "-o", f"predict.input={new}", "--runs-dir", runs, "--json")
    assert p.code == 0, p.err
    assert f"skipped {new / 'notes.txt'}: not one of" in p.err
    rows = (Path(p.json()["run_dir"]) / "per_case.csv").read_text().splitlines()
    assert rows[0] == "file,pred,prob_centre,prob_left,prob_right" and len(rows) == 4


def test_class_names_travel_in_the_weights_as_json(tmp_path):
    """The classification kit stores class names as JSON (a folder name may hold a comma) and still reads the
    comma-joined names of weights written before; a file without them gives class0 …"""
    from types import SimpleNamespace

    import torch

    from medrun.pipelines import training
    from medrun.pipelines.tasks.classification import OwnImages

    kit = OwnImages()
    kit.m = SimpleNamespace(model=SimpleNamespace(num_classes=2), dataset=SimpleNamespace(name="imagefolder"))
    for meta, want in ((kit.classes_metadata(["grade 1, mild", "grade 2"]), ["grade 1, mild", "grade 2"]),
                       ({"classes": "left,right"}, ["left", "right"]), ({}, ["class0", "class1"])):
        path = tmp_path / "checkpoints" / "model.safetensors"
        path.parent.mkdir(exist_ok=True)
        training.save_weights(torch.nn.Linear(2, 2), path, meta)
        kit.ctx = SimpleNamespace(checkpoint=path, parent=None, run=None)
        assert kit.trained_classes() == want
