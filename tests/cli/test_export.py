"""`medrun export --format monai-bundle`: MONAI's own bundle runner loads the bundle offline and predicts what
medrun predicts; `eval --checkpoint` of the exported weights gives the run's metrics; bad requests change nothing."""

import csv
import json
import shutil
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from medrun.cli.main import main

    runs = tmp_path_factory.mktemp("export") / "runs"
    assert (
        main(["train", "ad-lite", "--dataset", "oasis", "--fixture", "--runs-dir", str(runs), "-o", "train.epochs=1"])
        == 0
    )
    return runs, next((runs / "ad-lite").glob("train-*"))


def test_bundle_runs_under_monai_and_matches_medrun(trained, cli, tmp_path):
    runs, run = trained
    r = cli("export", run, "--format", "monai-bundle", "--out", tmp_path / "bundle", "--runs-dir", runs, "--json")
    assert r.code == 0, r.err
    bundle = tmp_path / "bundle"
    assert set(r.json()["files"]) == {
        "configs/metadata.json",
        "configs/inference.yaml",
        "models/model.pt",
        "docs/README.md",
    }
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    info = json.loads((run / "run.json").read_text())
    for key in ("version", "changelog", "monai_version", "pytorch_version", "numpy_version", "task", "description",
                "authors", "copyright", "network_data_format"):
        assert meta[key], key
    assert meta["medrun"]["run_id"] == info["id"] and meta["medrun"]["data_sha256"] == info["data_sha256"]

    lock = json.loads((run / "data.lock.json").read_text())
    root = lock["trees"]["oasis"]["root"]
    images = tmp_path / "images"
    images.mkdir()
    for rel in lock["splits"]["test"][:6]:
        shutil.copy(f"{root}/{rel}", images / rel.replace("/", "__"))
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            bundle / "configs" / "inference.yaml",
            "--meta_file",
            bundle / "configs" / "metadata.json",
            "--bundle_root",
            bundle,
            "--input_dir",
            images,
            "--output_dir",
            out,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    monai_preds = json.loads((out / "predictions.json").read_text())
    assert len(monai_preds) == 6

    p = cli("predict", "ad-lite", "--dataset", "oasis", "--fixture", "--runs-dir", runs, "--run", run,
            "-o", f"predict.input={images}", "--json")
    assert p.code == 0, p.err
    with open(f"{p.json()['run_dir']}/per_case.csv") as f:
        ours = {row["file"].rsplit("/", 1)[-1]: row for row in csv.DictReader(f)}
    for name, probs in monai_preds.items():
        for cls, v in probs.items():
            assert abs(float(ours[name][f"prob_{cls}"]) - v) < 2e-6, (name, cls)

    via_run = cli("eval", "ad-lite", "--dataset", "oasis", "--fixture", "--runs-dir", runs, "--run", run, "--json")
    via_bundle = cli("eval", "ad-lite", "--dataset", "oasis", "--fixture", "--runs-dir", runs, "--json",
                     "--checkpoint", bundle / "models" / "model.pt")
    assert via_run.code == via_bundle.code == 0, via_bundle.err
    for k in ("accuracy", "f1_macro", "auroc_micro"):
        assert via_bundle.json()["metrics"][k] == via_run.json()["metrics"][k]


def test_bad_export_requests_change_nothing(trained, cli, tmp_path, make_run, data):
    runs, run = trained
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    r = cli("export", run, "--out", full, "--runs-dir", runs)
    assert r.code == 2 and "not empty" in r.err and (full / "keep.txt").read_text() == "mine"
    r = cli("export", run, "--out", tmp_path / "b", "--format", "onnx", "--runs-dir", runs)
    assert r.code == 2 and "monai-bundle" in r.err and not (tmp_path / "b").exists()
    half = make_run(tmp_path / "other", data, status="running")
    r = cli("export", half, "--out", tmp_path / "c", "--runs-dir", tmp_path / "other")
    assert r.code == 2 and "not complete" in r.err and not (tmp_path / "c").exists()
    assert "Traceback" not in r.err
