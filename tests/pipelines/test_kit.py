"""The pipeline kit (issue 15): the stage context's writers, the predictor on the manifest's hardware, and the
sweep harness (child runs, resume at the first unfinished fold, one summary with stated statistics)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from medrun.pipelines.base import StageContext
from medrun.pipelines.predictor import Predictor
from medrun.pipelines.sweep import Child, child_request, stats, summarise


# -- writers -----------------------------------------------------------------------------------------------------
@pytest.fixture
def ctx(tmp_path):
    from medrun.artifacts import RunDir

    run = RunDir(tmp_path / "run").open()
    run.write_json("data.lock.json", {"splits": {}})
    data = tmp_path / "ctx-data"
    (data / "imgs").mkdir(parents=True)
    yield StageContext(stage="train", manifest=None, run=run, data_roots={"data": data})
    run.close()


def test_writers_write_atomically_into_the_run(ctx):
    ctx.write_csv("per_case.csv", [{"case": "a", "dice": 0.123456789}, {"case": "b", "dice": 1.0, "extra": 2}])
    assert (ctx.path / "per_case.csv").read_text().splitlines() == ["case,dice,extra", "a,0.123457,", "b,1.0,2"]
    ctx.write_npy("maps/a.npy", np.arange(4))
    assert np.load(ctx.path / "maps" / "a.npy").tolist() == [0, 1, 2, 3]
    ctx.write_png("pred/a.png", np.full((4, 5), 255, np.uint8))
    from PIL import Image

    assert Image.open(ctx.path / "pred" / "a.png").size == (5, 4)
    with ctx.figure("curve", figsize=(2, 2)) as (_, ax):
        ax.plot([0, 1])
    assert (ctx.path / "figures" / "curve.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(RuntimeError), ctx.figure("broken") as (_, ax):
        raise RuntimeError("a figure that fails half-way writes nothing")
    assert not (ctx.path / "figures" / "broken.png").exists()
    assert not [p for p in ctx.path.rglob("*") if p.name.endswith(".tmp")]


def test_write_nifti_keeps_array_and_affine(ctx):
    import nibabel as nib

    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    labels = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = ctx.write_nifti("predictions/case.nii.gz", labels, affine)
    img = nib.load(path)
    assert np.array_equal(np.asarray(img.dataobj), labels) and np.allclose(img.affine, affine)
    assert ctx.write_nifti("again.nii.gz", labels, affine).read_bytes() == path.read_bytes()  # no timestamp


def test_write_npz_holds_named_arrays_and_refuses_objects(ctx):
    ctx.write_npz("features.npz", x=np.ones((2, 3), np.float32), subject=["a", "b"])
    with np.load(ctx.path / "features.npz", allow_pickle=False) as z:
        assert z["x"].shape == (2, 3) and z["subject"].tolist() == ["a", "b"]
    ctx.write_npz("plain.npz", compressed=False, y=np.arange(3))
    assert np.load(ctx.path / "plain.npz")["y"].tolist() == [0, 1, 2]
    with pytest.raises(ValueError):
        ctx.write_npz("bad.npz", o=np.array([object()], dtype=object))
    assert not (ctx.path / "bad.npz").exists()


def test_record_splits_makes_paths_relative_to_the_data(ctx):
    root = ctx.data_roots["data"]
    ctx.record_splits({"train": [root / "imgs" / "a.png"], "test": ["case-7"]})
    ctx.record_splits({"test@1": [root / "imgs" / "b.png"]}, merge=True)
    lock = json.loads((ctx.path / "data.lock.json").read_text())
    assert lock["splits"] == {"train": ["imgs/a.png"], "test": ["case-7"], "test@1": ["imgs/b.png"]}


def test_predict_inputs_file_folder_glob_and_errors(ctx, tmp_path):
    from medrun.errors import DataError

    d = tmp_path / "in"
    d.mkdir()
    for n in ("b.png", "a.jpg", ".hidden.png", "notes.txt"):
        (d / n).write_bytes(b"x")
    assert [p.name for p in ctx.predict_inputs(d)] == ["a.jpg", "b.png"]
    assert [p.name for p in ctx.predict_inputs(d / "b.png")] == ["b.png"]
    assert [p.name for p in ctx.predict_inputs(f"{d}/*.png")] == ["b.png"]
    for bad, needle in (
        (d / "missing", "not found"),
        (d / "notes.txt", "is not one of"),
        (tmp_path / "ctx-data", "no images"),
    ):
        with pytest.raises(DataError, match=needle):
            ctx.predict_inputs(bad)


def test_parent_file_is_checked_against_the_parents_manifest(ctx, tmp_path, make_run, data):
    from medrun.errors import DataError, UsageError

    parent = make_run(tmp_path / "runs", data)
    from medrun.artifacts import RunDir

    ctx.parent = RunDir(parent)
    assert ctx.parent_file("checkpoints/model.safetensors").read_text() == "weights"
    with pytest.raises(UsageError, match="no checkpoints/other"):
        ctx.parent_file("checkpoints/other.safetensors")
    (parent / "checkpoints" / "model.safetensors").write_text("tampered")
    with pytest.raises(DataError, match="does not match"):
        ctx.parent_file("checkpoints/model.safetensors")


def test_supervised_report_takes_the_pages_paper_kwargs(ctx):
    """``Supervised.paper_kwargs``: a train/eval page whose network the paper reports no numbers for (an attack's
    target classifier, an explained classifier) gets its own title and no paper column."""
    from types import SimpleNamespace

    from medrun.pipelines.tasks.supervised import Supervised

    class Classifier(Supervised):
        def build_model(self):
            return None

        def evaluate(self, net, data):
            return {"accuracy": 0.75}, [{"case": "a", "ok": 1}]

        def paper_kwargs(self, split, metrics):
            return {"title": "Target classifier F", "expect": {}, "table": ""}

    ctx.spec = SimpleNamespace(title="Attack", paper="An attack paper", slug="attack")
    ctx.manifest = SimpleNamespace(paper=SimpleNamespace(expect={"asr": 0.99}, table="Table 1", setting=None),
                                   eval=SimpleNamespace(metrics=["accuracy"]))
    metrics = Classifier(ctx.manifest, ctx).report(None, "test", [])
    page = (ctx.path / "paper.md").read_text()
    assert metrics == {"accuracy": 0.75, "split": "test"} and page.startswith("# Target classifier F: train run")
    assert "| accuracy | 0.7500 | — |" in page and "asr" not in page and "Table 1" not in page


# -- predictor ---------------------------------------------------------------------------------------------------
class _Probe(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 3)
        self.seen = []

    def forward(self, x):
        y = self.lin(x)
        self.seen.append(y.dtype)
        return y


def test_predictor_runs_under_bf16_autocast_and_32_true_is_exact():
    torch.manual_seed(0)
    net, x = _Probe(), torch.randn(5, 8)
    plain = net(x).detach()
    out32 = Predictor(accelerator="cpu", precision="32-true")(net, x)
    assert net.seen[-1] == torch.float32 and torch.equal(out32, plain)
    out16 = Predictor(accelerator="cpu", precision="bf16-mixed")(net, x)
    assert net.seen[-1] == torch.bfloat16  # inside the model: bf16 autocast on the CPU
    assert out16.dtype == torch.float32 and torch.allclose(out16, plain, atol=5e-2)


def test_predictor_sliding_window_matches_a_whole_volume_pass():
    conv = torch.nn.Conv3d(1, 2, 1)
    vol = torch.randn(1, 1, 12, 10, 8)
    out = Predictor(accelerator="cpu", sliding={"roi_size": [6, 5, 4], "overlap": 0.5, "mode": "constant"}
                    ).sliding_window(conv, vol)
    assert torch.allclose(out, conv(vol).detach(), atol=1e-5)


def test_forward_runs_another_entry_point_through_the_predictor():
    from medrun.pipelines.predictor import Forward

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 2)

        def scores(self, x, scale=1.0):
            return self.lin(x) * scale

    net, x = Net(), torch.randn(4, 3)
    pred = Predictor(accelerator="cpu")
    assert torch.equal(pred(Forward(net, "scores"), x, scale=2.0), net.scores(x, 2.0).detach())
    both = Forward(net, lambda n, a, b: n.scores(a) + b)
    assert torch.equal(pred(both, x, x[:, :2]), (net.scores(x) + x[:, :2]).detach())
    vol = torch.randn(1, 3, 6, 5)
    out = Predictor(accelerator="cpu", sliding={"roi_size": [3, 5], "mode": "constant"}).sliding_window(
        Forward(net, lambda n, v: n.scores(v.movedim(1, -1)).movedim(-1, 1)), vol)
    assert out.shape == (1, 2, 6, 5) and not net.training


def test_predictor_map_shows_progress_through_the_stage_context():
    """eval and predict loops through ``pred.map`` report progress (a rich bar on a terminal, plain lines in logs)."""
    import torch

    from medrun.pipelines.base import StageContext
    from medrun.pipelines.predictor import Predictor

    seen = []

    def track(items, what):
        seen.append(what)
        yield from items

    net = torch.nn.Linear(3, 2)
    out = Predictor(accelerator="cpu", track=track).map(net, [torch.randn(2, 3), torch.randn(1, 3)])
    assert seen == ["predicting"] and [o.shape[0] for o in out] == [2, 1]
    lines = []
    ctx = StageContext.__new__(StageContext)
    ctx.interactive, ctx.log = False, lines.append
    assert list(ctx.track(range(3), "predicting", every=0.0)) == [0, 1, 2]
    assert lines[-1].startswith("predicting: 3/3 done")


@pytest.mark.slow
def test_eval_under_bf16_uses_the_manifests_precision_and_32_true_gives_the_train_numbers(cli, runs):
    small = ("--dataset", "oasis", "--fixture", "--runs-dir", runs, "-o", "dataset.img_size=32", "-o", "train.epochs=1",
             "--json")
    trained = cli("train", "ad-lite", *small)
    assert trained.code == 0, trained.err
    same = cli("eval", "ad-lite", *small).json()["metrics"]
    for k in ("accuracy", "f1_weighted", "auroc_micro"):  # eval's float32 forward = the train run's test metrics
        assert same[k] == trained.json()["metrics"][k], k
    bf16 = cli("eval", "ad-lite", *small, "--precision", "bf16-mixed")
    assert bf16.code == 0, bf16.err
    assert bf16.json()["run_id"] != cli("eval", "ad-lite", *small).json()["run_id"]  # precision is part of the id


# -- statistics --------------------------------------------------------------------------------------------------
def test_stats_state_their_rules():
    from scipy import stats as st

    vals = [0.8, 0.9, 0.85, float("nan"), 0.7]
    s = stats(vals)
    finite = np.array([0.8, 0.9, 0.85, 0.7])
    assert s["n"] == 4 and s["nonfinite"] == 1
    assert math.isclose(s["mean"], finite.mean()) and math.isclose(s["sd"], finite.std(ddof=1))
    lo, hi = st.t.interval(0.95, 3, loc=finite.mean(), scale=st.sem(finite))
    assert np.allclose(s["ci95"], [lo, hi])
    one = stats([0.5])
    assert one["sd"] == 0.0 and all(math.isnan(v) for v in one["ci95"])


def test_summarise_groups_rows():
    rows = [{"variant": "a", "fold": 1, "dice": 0.5}, {"variant": "a", "fold": 2, "dice": 0.7},
            {"variant": "b", "fold": 1, "dice": 0.9}, {"variant": "b", "fold": 2, "dice": float("inf")}]
    out = {r["variant"]: r for r in summarise(rows, ["dice"], by=["variant"])}
    assert math.isclose(out["a"]["dice"], 0.6) and out["a"]["dice_n"] == 2
    assert out["b"]["dice"] == 0.9 and out["b"]["dice_nonfinite"] == 1 and out["b"]["dice_n"] == 1


def test_child_request_adds_overrides_after_the_parents():
    from medrun.pipelines.runner import Request

    parent = Request(pipeline="ad-lite", stage="cv", dataset="oasis", overrides=["train.epochs=1"], seed=3,
                     argv=["medrun", "cv", "ad-lite", "--dataset", "oasis"])
    req = child_request(parent, Child("fold2", {"dataset.fold": 1, "seed": 7}))
    assert req.stage == "train" and req.overrides == ["train.epochs=1", "dataset.fold=1"] and req.seed == 7
    assert req.argv == ["medrun", "train", "ad-lite", "--dataset", "oasis", "-o", "dataset.fold=1", "--seed", "7"]


def test_child_run_reads_its_csv_as_written(ctx):
    from medrun.pipelines.sweep import ChildRun

    ctx.write_csv("per_case.csv", [{"case": "000012", "dice": 0.5}, {"case": "b", "dice": float("inf")}])
    child = ChildRun(Child("fold1"), "ab" * 32, ctx.path, {}, reused=True)
    assert child.read_csv() == [{"case": "000012", "dice": "0.5"}, {"case": "b", "dice": "inf"}]


def test_write_mask_at_the_inputs_size(ctx):
    from PIL import Image

    from medrun.pipelines.tasks.segmentation import write_mask

    prob = np.zeros((4, 4), np.float32)
    prob[1:3, 1:3] = 0.9
    mask = write_mask(ctx, "pred/a.png", prob, (8, 6), threshold=0.5)  # probabilities: bilinear, then > 0.5
    png = np.asarray(Image.open(ctx.path / "pred" / "a.png"))
    assert png.shape == (6, 8) and set(np.unique(png).tolist()) == {0, 255} and np.array_equal(png > 0, mask)
    write_mask(ctx, "pred/b.png", prob > 0.5, (8, 8), foreground=1)  # a mask: nearest neighbour, 0/1
    expected = np.kron(prob > 0.5, np.ones((2, 2))).astype(np.uint8)
    assert np.array_equal(np.asarray(Image.open(ctx.path / "pred" / "b.png")), expected)
    assert write_mask(ctx, "pred/c.png", prob > 0.5).shape == (4, 4)


# -- the sweep harness end to end: cv of ad-lite ----------------------------------------------------------------
SMALL_CV = ["--dataset", "oasis", "--fixture", "-o", "dataset.img_size=32", "-o", "train.epochs=1",
            "-o", "dataset.folds=3", "-o", "train.batch_size=16"]


def _medrun(args, runs, cache, **env):
    return subprocess.run([sys.executable, "-m", "medrun.cli.main", *map(str, args), "--runs-dir", str(runs)],
                          env={**os.environ, "MEDRUN_PLAIN": "1", "MEDRUN_CACHE": str(cache), **env},
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_cv_folds_are_child_runs_and_a_killed_cv_resumes_at_the_first_unfinished_fold(tmp_path):
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    first = _medrun(["train", "ad-lite", *SMALL_CV, "-o", "dataset.fold=0", "--json"], runs, cache)
    assert first.returncode == 0, first.stderr
    fold1 = json.loads(first.stdout)["run_dir"]
    killed = _medrun(["cv", "ad-lite", *SMALL_CV], runs, cache, MEDRUN_TEST_KILL_AT_STEP="2")
    assert killed.returncode == -9, killed.stderr
    assert "fold 1/3 fold1: reused" in killed.stderr  # the fold trained beforehand is this cv's fold 1
    done = _medrun(["cv", "ad-lite", *SMALL_CV, "--json"], runs, cache)
    assert done.returncode == 0, done.stderr
    assert "fold 1/3 fold1: reused" in done.stderr and "fold 2/3 fold2: running" in done.stderr
    out = json.loads(done.stdout)
    info = json.loads((tmp_path / out["run_dir"] / "run.json").read_text())
    children = info["children"]
    assert [c["name"] for c in children] == ["fold1", "fold2", "fold3"] and children[0]["run_dir"] == fold1
    fold2 = json.loads((tmp_path / children[1]["run_dir"] / "run.json").read_text())
    assert fold2["stage"] == "train" and "dataset.fold=1" in fold2["command"]
    m = out["metrics"]
    assert m["folds"] == 3 and m["accuracy_n"] == 3 and len(m["accuracy_ci95"]) == 2
    per_fold = (tmp_path / out["run_dir"] / "per_fold.csv").read_text()
    assert per_fold.count("\n") == 4 and "mean ± sd" in (tmp_path / out["run_dir"] / "paper.md").read_text()


def test_a_stage_input_joins_the_data_fingerprint(tmp_path):
    """`predict.input` (or `extract.input`, `denoise.input` …) is fingerprinted with the data: the same command on a
    folder whose files changed gets a new run id instead of the old result (icu-vitals' learning check runs it end
    to end). A single file is a tree of one entry; a missing input is left to the stage's own message."""
    from types import SimpleNamespace

    from medrun.artifacts.fingerprint import fingerprint_tree
    from medrun.pipelines.runner import stage_inputs

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"1")
    m = SimpleNamespace(predict=SimpleNamespace(input=str(folder)), extract=SimpleNamespace(input=None))
    assert stage_inputs(m, "predict") == {"predict.input": folder}
    assert stage_inputs(m, "eval") == {} and stage_inputs(m, "extract") == {}
    before = fingerprint_tree(folder, None)["sha256"]
    (folder / "b.png").write_bytes(b"2")
    assert fingerprint_tree(folder, None)["sha256"] != before
    assert list(fingerprint_tree(folder / "a.png", None)["files"]) == ["a.png"]
    m.predict.input = str(tmp_path / "missing")
    assert stage_inputs(m, "predict") == {}


def test_epoch_line_shows_validation_values_only_on_epochs_that_validated():
    """Lightning keeps the last validation values in callback_metrics; the per-epoch line and event must not repeat
    them on an epoch without validation (check_val_every_n_epoch > 1)."""
    from types import SimpleNamespace

    from medrun.pipelines.training import EpochLog

    lines, events = [], []
    run = SimpleNamespace(append_event=lambda kind, **kw: events.append(kw))
    cb = EpochLog(run, lines.append, plain=True)
    metrics = {"train_loss": torch.tensor(0.5), "val_dice": torch.tensor(0.8)}
    for epoch, validated in ((0, True), (1, False)):
        trainer = SimpleNamespace(sanity_checking=False, global_rank=0, current_epoch=epoch, max_epochs=2,
                                  callback_metrics=metrics)
        cb.on_train_epoch_start(trainer, None)
        if validated:
            cb.on_validation_epoch_end(trainer, None)
        cb.on_train_epoch_end(trainer, None)
    assert "val_dice 0.8000" in lines[0] and "val_dice" not in lines[1] and "train_loss 0.5000" in lines[1]
    assert "val_dice" in events[0] and "val_dice" not in events[1]


def test_track_reports_progress_of_a_long_loop(ctx, monkeypatch):
    """A final evaluation is never silent: plain mode logs `what: i/n (s)` at most every `every` seconds and a last
    line when the loop took longer; a short loop prints nothing."""
    import time

    lines = []
    monkeypatch.setattr(ctx, "log", lines.append)
    assert list(ctx.track(range(3), "scoring", every=60)) == [0, 1, 2] and lines == []
    clock = iter(range(0, 100, 4))
    monkeypatch.setattr(time, "perf_counter", lambda: float(next(clock)))
    assert list(ctx.track([1, 2, 3, 4], "scoring", every=5)) == [1, 2, 3, 4]
    assert lines[0] == "scoring: 2/4 (8 s)" and lines[-1].startswith("scoring: 4/4 done")
