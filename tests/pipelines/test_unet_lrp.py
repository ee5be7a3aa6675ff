"""unet-lrp: learning on the fixture, explain / lrp-stats / eval on the finished run (parent recorded, weights
checked), and bad input through the CLI. The full-size architectures and the LRP engine are in
tests/models/test_lrp_unet.py."""

import json

import numpy as np
import pytest

# a smaller config than the fixture manifest's smoke run (64² inputs, 6 epochs), still a residual U-Net
SMALL = ["-o", "dataset.resize=[64, 64]", "-o", "dataset.crop=64", "-o", "train.epochs=6", "-o", "train.lr=0.003",
         "-o", "train.val_every=2", "-o", "train.lrp_images=2", "-o", "explain.images=2"]
BASE = ["unet-lrp", "--dataset", "montgomery", "--fixture", *SMALL]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Two torch threads on two shared cores spin against each other (10× slower here); one is enough."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small train run shared by the tests of this module: (runs dir, the CLI's JSON result)."""
    import contextlib
    import io

    from medrun.cli.main import main

    runs = tmp_path_factory.mktemp("runs")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["train", *BASE, "--runs-dir", str(runs), "--json"])
    assert code == 0
    return runs, json.loads(buf.getvalue())


def _run_dir(runs, stage, result):
    return runs / "unet-lrp" / f"{stage}-{result['run_id'][:12]}"


@pytest.mark.slow
def test_learns_and_checks_lrp_on_fixture(trained):
    """Validation Dice well above an all-lung / no-lung guess (≈ 0.3 / 0); relevance concentrates on the lung;
    the residual fix lowers max |R| by orders of magnitude."""
    runs, out = trained
    m = out["metrics"]
    assert out["status"] == "complete"
    assert m["dice"] > 0.75, m
    assert m["lrp_focus_over_area"] > 1.0 and m["lrp_fix_ratio"] > 100 and m["lrp_residual_units"], m
    assert m["params_total"] == 408005  # resunet, widths (8, 16, 32, 64, 128)
    run = _run_dir(runs, "train", out)
    for f in ("checkpoints/model.safetensors", "checkpoints/best.ckpt", "per_case.csv", "paper.md",
              "figures/learning_curves.png", "MANIFEST.sha256", "logs/metrics.csv"):
        assert (run / f).exists(), f
    assert "Fig. 3" in (run / "paper.md").read_text()
    # the best validation epoch (Lightning's ModelCheckpoint on val_dice) is the one kept and scored
    import csv

    with open(run / "logs" / "metrics.csv") as f:
        val = [(float(r["val_dice"]), int(r["epoch"])) for r in csv.DictReader(f) if r.get("val_dice")]
    assert len(val) == 3 and m["best_epoch"] == max(val, key=lambda v: (v[0], -v[1]))[1] + 1
    assert m["dice"] == pytest.approx(max(v[0] for v in val), abs=1e-4)
    lock = json.loads((run / "data.lock.json").read_text())
    assert len(lock["splits"]["train"]) == 19 and len(lock["splits"]["val"]) == 5  # tail 20 % validates
    assert lock["splits"]["val"][-1] == "CXR_png/MCUCXR_0024_1.png"


@pytest.mark.slow
def test_explain_and_lrp_stats_on_the_finished_run(trained, cli):
    from medrun.artifacts import sha256_file

    runs, out = trained
    train_dir = _run_dir(runs, "train", out)
    weights_sha = sha256_file(train_dir / "checkpoints" / "model.safetensors")

    ex = cli("explain", *BASE, "--runs-dir", runs, "--run", out["run_id"][:8], "--json")
    assert ex.code == 0, ex.err
    run = _run_dir(runs, "explain", ex.json())
    info = json.loads((run / "run.json").read_text())
    assert info["parent"] == out["run_id"] and info["parent_dir"] == str(train_dir)
    assert info["parent_weights_sha256"] == weights_sha
    assert ex.json()["run_id"] != out["run_id"]
    maps = sorted((run / "maps").glob("*_relevance.npy"))
    assert len(maps) == 2 and len(list((run / "figures").glob("lrp_*.png"))) == 2
    r = np.load(maps[0])
    assert r.shape == (64, 64) and np.isfinite(r).all()
    log = np.load(str(maps[0]).replace("_relevance", "_log"))
    assert np.array_equal(log == 0, np.abs(r) <= 0.1)  # the log transform zeroes (−t, t)
    assert ex.json()["metrics"]["n_explained"] == 2 and "focus" in (run / "per_case.csv").read_text()
    assert "Relevance maps" in (run / "paper.md").read_text()

    st = cli("lrp-stats", *BASE, "--runs-dir", runs, "--json")  # finds the train run by its manifest
    assert st.code == 0, st.err
    sm = st.json()["metrics"]
    assert sm["fix_ratio"] > 100 and sm["focus_over_area"] > 1.0 and sm["n_explained"] == 2
    assert json.loads((_run_dir(runs, "lrp-stats", st.json()) / "run.json").read_text())["parent"] == out["run_id"]

    ev = cli("eval", *BASE, "--runs-dir", runs, "--json")
    assert ev.code == 0 and ev.json()["metrics"]["dice"] == pytest.approx(out["metrics"]["dice"])

    pr = cli("predict", *BASE, "--runs-dir", runs, "--json")
    assert pr.code == 0 and pr.json()["metrics"]["n"] == 5
    assert len(list((_run_dir(runs, "predict", pr.json()) / "predictions").glob("MCUCXR_*.png"))) == 5

    deep = cli("explain", *BASE, "--runs-dir", runs, "-o", "explain.layer=model.0.conv.unit1.conv", "--json")
    assert deep.code == 0, deep.err
    deep_run = _run_dir(runs, "explain", deep.json())
    first = sorted((deep_run / "maps").glob("*_relevance.npy"))[0]
    assert np.load(first).shape == (32, 32)  # after the first stride-2 unit
    assert deep.json()["metrics"]["n_explained"] == 2

    nofix = cli("explain", *BASE, "--runs-dir", runs, "-o", "explain.residual_fix=false", "--json")
    assert nofix.code == 0 and nofix.json()["metrics"]["max_abs_r"] > 100 * ex.json()["metrics"]["max_abs_r"]


@pytest.mark.slow
def test_predict_on_files_and_the_monai_bundle_agree(trained, cli, tmp_path):
    """predict.input reads image files as eval reads its cases and writes masks at each input's own size (128² here,
    the network sees 64²); MONAI's bundle runner, offline, gives the same masks at the network's size."""
    import shutil
    import subprocess
    import sys

    from PIL import Image

    runs, out = trained
    train_dir = _run_dir(runs, "train", out)
    lock = json.loads((train_dir / "data.lock.json").read_text())
    root = lock["trees"]["montgomery"]["root"]
    images = tmp_path / "images"
    images.mkdir()
    for rel in lock["splits"]["val"][:2]:
        shutil.copy(f"{root}/{rel}", images)
    pr = cli("predict", *BASE, "--runs-dir", runs, "-o", f"predict.input={images}", "--json")
    assert pr.code == 0, pr.err
    ours = {p.stem: np.asarray(Image.open(p)) > 0
            for p in (_run_dir(runs, "predict", pr.json()) / "predictions").iterdir()}
    split = cli("predict", *BASE, "--runs-dir", runs, "--json")  # the same images as cases of the eval split
    split_dir = _run_dir(runs, "predict", split.json()) / "predictions"
    assert sorted(ours) == [p.rsplit("/", 1)[-1][:-4] for p in lock["splits"]["val"][:2]]
    assert all(np.array_equal(m, np.asarray(Image.open(split_dir / f"{k}.png")) > 0) for k, m in ours.items())
    assert all(m.shape == Image.open(images / f"{k}.png").size[::-1] == (128, 128) for k, m in ours.items())

    ex = cli("export", train_dir, "--format", "monai-bundle", "--out", tmp_path / "bundle", "--runs-dir", runs)
    assert ex.code == 0, ex.err
    bundle = tmp_path / "bundle"
    proc = subprocess.run([sys.executable, "-m", "monai.bundle", "run",
                           "--config_file", bundle / "configs" / "inference.yaml",
                           "--meta_file", bundle / "configs" / "metadata.json", "--bundle_root", bundle,
                           "--input_dir", images, "--output_dir", tmp_path / "out"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    theirs = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert sorted(theirs) == sorted(f"{k}.png" for k in ours)
    for k, mask in ours.items():  # ours is the same probability map resized to the input before the threshold
        small = np.asarray(Image.fromarray(mask).resize((64, 64), Image.NEAREST))
        assert np.mean(np.array(theirs[f"{k}.png"], dtype=bool) != small) < 0.03, k


# -- issue 22: the paper's comparison (3 architectures × batch vs instance norm) as one stage ----------------------
@pytest.mark.slow
def test_compare_reuses_train_runs_and_writes_one_table(trained, cli):
    """Each variant is the very train run `medrun train -o model.arch=… -o model.norm=…` makes (here the module's
    residual U-Net, reused: no training), and the sweep's paper.md sets it beside the paper's finding."""
    runs, out = trained
    r = cli("compare", *BASE, "-o", "compare.archs=[resunet]", "-o", "compare.norms=[batch]", "--runs-dir", runs,
            "--json")
    assert r.code == 0, r.err
    m, t = r.json()["metrics"], out["metrics"]
    assert m["variants"] == ["resunet-batch"]
    assert m["resunet-batch.dice"] == t["dice"] and m["resunet-batch.lrp_fix_ratio"] == t["lrp_fix_ratio"]
    assert m["resunet-batch.fix_ratio"] == t["lrp_fix_ratio"] and m["resunet-batch.params_total"] == 408005
    run = _run_dir(runs, "compare", r.json())
    page = (run / "paper.md").read_text()
    assert "3 architectures × batch vs instance norm" in page and out["run_id"][:12] in page
    assert "| resunet | batch |" in page and "max abs R ~2e15" in page and "fixes max" not in page
    assert (run / "per_variant.csv").read_text().count("\n") == 2


def test_compare_claims_batch_against_instance_per_architecture():
    from pathlib import Path

    from medrun.pipelines.sweep import Child, ChildRun
    from medrun.pipelines.unet_lrp.compare import claims

    def child(arch, norm, focus, **more):
        return ChildRun(Child(f"{arch}-{norm}", labels={"arch": arch, "norm": norm}), "0" * 64, Path("."),
                        {"lrp_focus_over_area": focus, **more}, True)

    runs = [child("unet", "batch", 3.0), child("unet", "instance", 2.0),
            child("resunet", "batch", 2.5, lrp_fix_ratio=1e9), child("resunet", "instance", 2.75, lrp_fix_ratio=1e3)]
    c = claims(runs, ["unet", "resunet"], ["batch", "instance"])
    assert c["unet.focus_gain_batch_over_instance"] == pytest.approx(1.0)
    assert c["resunet.focus_gain_batch_over_instance"] == pytest.approx(-0.25)
    assert c["batch_concentrates_more"] == 1 and c["n_archs"] == 2
    assert c["resunet-batch.fix_ratio"] == 1e9 and c["resunet-instance.fix_ratio"] == 1e3
    assert "batch_concentrates_more" not in claims(runs[:1], ["unet"], ["batch"])  # one norm: nothing to compare


def test_compare_needs_the_lrp_check_of_its_train_runs():
    from types import SimpleNamespace

    from medrun.errors import UsageError
    from medrun.pipelines.unet_lrp.compare import compare

    pipe = SimpleNamespace(m=SimpleNamespace(train=SimpleNamespace(lrp_images=0), compare=None), ctx=None)
    with pytest.raises(UsageError, match="train.lrp_images is 0") as err:
        compare(pipe)
    assert "-o train.lrp_images=4" in str(err.value)


def test_lrp_check_when_nothing_is_predicted():
    """A net that predicts no object anywhere (an early epoch) is reported as 0 explained images, not a crash."""
    from types import SimpleNamespace

    import torch

    from medrun.models import lrp_unet as L
    from medrun.pipelines.unet_lrp.config import LRP
    from medrun.pipelines.unet_lrp.explain import lrp_stats

    net = L.Segmenter("resunet", "batch", 1, 1, (4, 4, 4, 4, 4)).eval()
    last = [mod for mod in net.modules() if isinstance(mod, torch.nn.Conv2d | torch.nn.ConvTranspose2d)][-1]
    with torch.no_grad():
        last.bias.fill_(-100.0)
    logs = []
    pipe = SimpleNamespace(m=SimpleNamespace(dataset=SimpleNamespace(crop=32)), ctx=SimpleNamespace(log=logs.append))
    case = SimpleNamespace(id="c1", image="c1.png")
    stats, rows = lrp_stats(pipe, net, [case], [(np.zeros((1, 32, 32), np.float32), None)], LRP())
    assert stats["n_explained"] == 0 and rows == [{"case": "c1", "object_px": 0}]
    assert "no object predicted" in logs[0]


@pytest.mark.slow
def test_bad_input_on_the_finished_run(trained, cli):
    runs, out = trained
    train_dir = _run_dir(runs, "train", out)
    weights = train_dir / "checkpoints" / "model.safetensors"

    missing = cli("explain", *BASE, "--runs-dir", runs, "-o", "explain.object=99")
    assert missing.code == 2 and "object 99 does not exist" in missing.err and "explain.object" in missing.err
    assert "Traceback" not in missing.err
    (failed,) = [p for p in (runs / "unet-lrp").glob("explain-*")
                 if json.loads((p / "run.json").read_text())["status"] == "failed"]
    assert not (failed / "MANIFEST.sha256").exists()

    layer = cli("explain", *BASE, "--runs-dir", runs, "-o", "explain.layer=down_9")
    assert layer.code == 2
    assert "explain.layer 'down_9' is not a layer of this resunet; valid: model.0.conv.unit0.conv" in layer.err

    wrong = cli("explain", *BASE, "--runs-dir", runs, "--checkpoint", weights, "-o", "model.arch=unet")
    assert wrong.code == 2 and "do not fit this model" in wrong.err and str(weights) in wrong.err

    # a tampered parent weights file is refused (last: it spoils the shared run)
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    bad = cli("explain", *BASE, "--runs-dir", runs, "--run", out["run_id"], "--force")
    assert bad.code == 3 and "does not match its run's MANIFEST.sha256" in bad.err and "Traceback" not in bad.err


def test_run_of_another_pipeline_or_incomplete_is_refused(cli, runs, make_run, data):
    other = make_run(runs, data, pipeline="ad-lite")
    r = cli("explain", *BASE, "--runs-dir", runs, "--run", other)
    assert r.code == 2 and "is a ad-lite train run, not a unet-lrp train run" in r.err
    unfinished = make_run(runs, data, run_id="cd" * 32, pipeline="unet-lrp", status="running")
    r = cli("lrp-stats", *BASE, "--runs-dir", runs, "--run", unfinished)
    assert r.code == 2 and "is not complete" in r.err
    assert not list((runs / "unet-lrp").glob("lrp-stats-*"))


def test_no_train_run_says_what_to_do(cli, runs):
    r = cli("explain", "unet-lrp", "--dataset", "cityscapes", "--fixture", "--runs-dir", runs)
    assert r.code == 2 and "medrun train unet-lrp --dataset cityscapes --fixture" in r.err


def test_unreadable_image_names_the_file(cli, runs, tmp_path):
    from medrun.datasets import get

    root = get("montgomery").make_fixture(tmp_path / "d", 0)
    bad = root / "CXR_png" / "MCUCXR_0004_0.png"
    bad.write_bytes(b"not a png")
    r = cli("train", "unet-lrp", "--dataset", "montgomery", "--data-dir", root, "--runs-dir", runs, *SMALL)
    assert r.code == 3 and "MCUCXR_0004_0.png" in r.err and "Traceback" not in r.err
    assert not runs.exists()  # found by the header check before a run directory opens


def test_wrong_layout_and_channel_mismatch(cli, runs, tmp_path):
    (tmp_path / "x" / "stuff").mkdir(parents=True)
    r = cli("train", "unet-lrp", "--dataset", "cityscapes", "--data-dir", tmp_path / "x", "--runs-dir", runs)
    assert r.code == 3 and "does not have the Cityscapes layout" in r.err and not runs.exists()
    r = cli("train", "unet-lrp", "--dataset", "cityscapes", "--fixture", "--runs-dir", runs,
            "-o", "model.in_channels=1")
    assert r.code == 2 and "-o model.in_channels=3" in r.err
    r = cli("train", "unet-lrp", "--dataset", "montgomery", "--fixture", "--runs-dir", runs, "-o", "dataset.crop=100")
    assert r.code == 2 and "multiple of 16" in r.err


def test_every_manifest_validates(cli):
    from pathlib import Path

    from medrun import manifests

    folder = Path(manifests.__file__).parent / "unet-lrp"
    files = sorted(folder.glob("*.yaml"))
    assert len(files) == 8
    for f in files:
        r = cli("validate", f)
        assert r.code == 0, (f, r.err)


def test_dry_run_builds_the_full_size_net(cli, runs):
    r = cli("train", "unet-lrp", "--dataset", "montgomery", "--fixture", "--runs-dir", runs, "-o", "model.width_div=1",
            "-o", "model.arch=unet", "--dry-run", "--json")
    assert r.code == 0 and r.json()["params_total"] == 7_782_849


@pytest.mark.slow
def test_own_pairs_in_clinic_formats_learn_and_unlabelled_files_predict_at_their_size(cli, runs, tmp_path):
    """Issue 21: ``pairs`` of 16-bit PNG, float TIFF and DICOM images (the fixture's mix) train unet-lrp past a
    threshold; unlabelled inputs of each kind, at a size the network never saw, get masks at their own size; a
    stray file is named."""
    from PIL import Image

    from medrun.datasets import get, imageio

    root = get("pairs").make_fixture(tmp_path / "data", 0)
    small = ["--dataset", "pairs", "--data-dir", root, "--runs-dir", runs, "-o", "dataset.resize=[64, 64]",
             "-o", "dataset.crop=64", "-o", "dataset.crops_per_image=4", "-o", "model.width_div=4",
             "-o", "train.epochs=5", "-o", "train.lr=0.003", "-o", "train.val_every=5", "-o", "train.lrp_images=0"]
    r = cli("train", "unet-lrp", *small, "--json")
    assert r.code == 0, r.err
    assert r.json()["metrics"]["dice"] > 0.5, r.json()["metrics"]  # all-background scores 0, all-pore ≈ 0.06
    new = tmp_path / "new"
    new.mkdir()
    big = np.asarray(Image.open(root / "masks" / "slice_0000.png").resize((150, 110)))  # W × H of a new scan
    Image.fromarray(np.where(big > 0, 9000, 40000).astype(np.uint16)).save(new / "a.png")
    imageio.write_dicom_slice(new / "b.dcm", np.where(big > 0, 500, 3000))
    (new / "notes.txt").write_text("not an image")
    p = cli("predict", "unet-lrp", *small, "-o", f"predict.input={new}", "--json")
    assert p.code == 0, p.err
    assert f"skipped {new / 'notes.txt'}" in p.err
    out = runs / "unet-lrp" / f"predict-{p.json()['run_id'][:12]}"
    for name in ("a", "b"):
        mask = np.asarray(Image.open(out / "predictions" / f"{name}.png"))
        assert mask.shape == (110, 150) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}, name
    rows = (out / "per_case.csv").read_text().splitlines()
    assert rows[0].startswith("case,input,height,width") and len(rows) == 3 and rows[1].startswith("a,")
    import nibabel as nib  # DICOM in, NIfTI out: the mask with the slice's geometry, beside its PNG

    nii = nib.load(out / "predictions" / "b.nii.gz")
    assert nii.shape == (110, 150) and not (out / "predictions" / "a.nii.gz").exists()
    np.testing.assert_allclose(nii.affine, imageio.read(new / "b.dcm").affine)
    assert np.array_equal(np.asarray(nii.dataobj) > 0, np.asarray(Image.open(out / "predictions" / "b.png")) > 0)
