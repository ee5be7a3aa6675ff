"""mrd-flow: GIN-ST-FPS at full size, the zoo, FPS / kNN / MAB against brute-force and reference code, the
per-sample metrics against scikit-learn, learning on the fixture through the CLI, and bad input."""

import json
import math
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medrun.models import flowsets
from medrun.models.flowsets import FlowNet


def n_params(m):
    return sum(p.numel() for p in m.parameters())


# -- the architecture ----------------------------------------------------------------------------------------------
def test_gin_st_fps_at_full_size():
    """The card's GIN-ST-FPS: GINConv(MLP 11→32→32→32 as the official code) → GELU, [x, x1] = 43 dims, 3 FPSSAB
    (43→32, 32→32, 32→32, LayerNorm) and Linear 32→1: 30,049 parameters; one logit per event."""
    net = FlowNet("gin-st-fps", 11).eval()
    assert n_params(net) == 30049
    core = net.core
    assert core.gnn.nn[0].in_features == 11 and core.gnn.nn[-1].out_features == 32
    assert [b.mab0.fc_q.in_features for b in core.blocks] == [43, 32, 32]
    assert [b.mab1.fc_o.out_features for b in core.blocks] == [32, 32, 32] and core.head.in_features == 32
    assert core.blocks[0].mab0.dim_v == 32 and core.blocks[0].mab0.heads == 4
    x = torch.rand(1, 3000, 11) * 4.5
    with torch.no_grad():
        assert net(x).shape == (1, 3000)
    # FPS ratio 0.0005: about 150 inducing events on a full sample, 25 on a 5·10⁴-event training draw, ≥ 16 always
    assert flowsets.fps_count(300_000, 0.0005) == 150 and flowsets.fps_count(50_000, 0.0005) == 25
    assert flowsets.fps_count(3000, 0.0005) == 16 and flowsets.fps_count(2000, 0.01) == 20


def test_every_zoo_model_runs():
    x = torch.rand(2, 300, 11) * 4.5
    counts = {}
    for arch in flowsets.ARCHS:
        net = FlowNet(arch, 11, hidden=16, fps_ratio=0.05)
        out = net(x)
        assert out.shape == (2, 300) and torch.isfinite(out).all(), arch
        out.sum().backward()
        counts[arch] = n_params(FlowNet(arch, 11))
    assert counts["mlp"] < counts["gin"] < counts["gin-st-fps"] < counts["st"] < counts["pointnet"]
    assert n_params(FlowNet("st", 11, inducing=150)) - counts["st"] == 4 * 134 * 32  # ST-150I: more inducing points


def test_drop_features_keep_them_for_the_graph():
    """Table 7: CD10, CD19, CD45 leave the node features (8 inputs) but the kNN graph is built on all 11."""
    markers = ["TIME", "FSC-A", "FSC-W", "SSC-A", "CD20", "CD10", "CD45", "CD34", "CD19", "CD38", "SY41"]
    keep = [i for i, m in enumerate(markers) if m not in ("CD10", "CD19", "CD45")]
    net = FlowNet("gin-st-fps", 11, keep).eval()
    assert net.core.gnn.nn[0].in_features == 8 and net.core.blocks[0].mab0.fc_q.in_features == 40
    seen = {}
    net.core.register_forward_pre_hook(lambda m, args: seen.update(x=args[0], e=args[1]))
    x = torch.rand(1, 500, 11)
    net(x)
    assert seen["x"].shape == (1, 500, 8)
    assert torch.equal(seen["e"], flowsets.knn_edges(x, 10))  # neighbours on every marker


# -- FPS, kNN and attention against references -----------------------------------------------------------------------
def _fps_brute_force(x: np.ndarray, m: int, start: int) -> list[int]:
    d = ((x[:, None] - x[None]) ** 2).sum(-1)  # all pairwise squared distances
    picked = [start]
    for _ in range(m - 1):
        nearest = d[:, picked].min(1)  # each point's distance to the picked set
        picked.append(int(np.argmax(nearest)))  # the farthest; np.argmax takes the lowest index on ties
    return picked


def test_fps_picks_the_same_points_as_brute_force():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 400, 11, generator=g, dtype=torch.float64)
    idx = flowsets.fps(x, 25, torch.tensor([0, 7, 399]))
    for b, start in enumerate((0, 7, 399)):
        assert idx[b].tolist() == _fps_brute_force(x[b].numpy(), 25, start)
    grid = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.5]]], dtype=torch.float64)
    assert flowsets.fps(grid, 4).tolist() == [[0, 3, 1, 2]]  # ties go to the lowest index


def test_knn_matches_brute_force():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 300, 11, generator=g)
    edges = flowsets.knn_edges(x, 10)
    assert edges.shape == (2, 2 * 300 * 10)
    for b in range(2):
        d = torch.cdist(x[b].double(), x[b].double())
        d.fill_diagonal_(float("inf"))
        want = d.topk(10, largest=False).indices.sort(1).values
        mine = edges[:, edges[1] // 300 == b]
        got = (mine[0] - b * 300).view(300, 10).sort(1).values
        assert torch.equal(mine[1].view(300, 10)[:, 0] - b * 300, torch.arange(300))
        assert torch.equal(got, want)


def _reference_mab(mab, q, k):
    """The Set Transformer reference MAB (flowNetworks src/models/modules.py), GELU feed-forward."""
    qq = mab.fc_q(q)
    kk, vv = mab.fc_k(k), mab.fc_v(k)
    split = mab.dim_v // mab.heads
    q_, k_, v_ = (torch.cat(t.split(split, 2), 0) for t in (qq, kk, vv))
    a = torch.softmax(q_.bmm(k_.transpose(1, 2)) / math.sqrt(mab.dim_v), 2)
    o = torch.cat((q_ + a.bmm(v_)).split(q.size(0), 0), 2)
    o = mab.ln0(o)
    return mab.ln1(o + torch.nn.functional.gelu(mab.fc_o(o)))


def test_mab_and_fpssab_match_the_reference_code():
    torch.manual_seed(0)
    mab = flowsets.MAB(43, 43, 32, 4)
    q, k = torch.randn(2, 20, 43), torch.randn(2, 500, 43)
    torch.testing.assert_close(mab(q, k), _reference_mab(mab, q, k), rtol=1e-5, atol=1e-5)
    blk = flowsets.FPSSAB(43, 32, 4)
    idx = flowsets.fps(k, 20)
    ind = torch.stack([k[b, idx[b]] for b in range(2)])
    want = _reference_mab(blk.mab1, k, _reference_mab(blk.mab0, ind, k))
    torch.testing.assert_close(blk(k, idx), want, rtol=1e-5, atol=1e-5)


def test_per_sample_scores_match_sklearn():
    from sklearn.metrics import f1_score, precision_score, recall_score

    from medrun.metrics import cytometry

    rng = np.random.default_rng(0)
    for _ in range(20):
        t = rng.random(500) < rng.uniform(0, 0.1)
        p = rng.random(500) < rng.uniform(0, 0.1)
        s = cytometry.sample_scores(t, p)
        assert math.isclose(s["f1"], f1_score(t, p, zero_division=1.0))
        assert math.isclose(s["precision"], precision_score(t, p, zero_division=0.0))
        assert math.isclose(s["recall"], recall_score(t, p, zero_division=0.0))
        assert math.isclose(s["mrd_true"], t.mean()) and math.isclose(s["mrd_pred"], p.mean())
    none = np.zeros(100, bool)
    assert cytometry.sample_scores(none, none)["f1"] == 1.0  # no blasts, none predicted
    t = np.zeros(1000, bool)
    t[:10] = True
    assert math.isclose(cytometry.all_positive_f1(t), 2 * 0.01 / 1.01)
    rows = [{"precision": 1.0, "recall": 0.5, "f1": 0.2}, {"precision": 0.5, "recall": 1.0, "f1": 0.9},
            {"precision": 0.0, "recall": 0.0, "f1": 0.4}]
    assert cytometry.summarise(rows)["f1_median"] == 0.4 and math.isclose(cytometry.summarise(rows)["f1"], 0.5)


# -- the pipeline through the CLI ------------------------------------------------------------------------------------
QUICK = ["-o", "train.events_per_sample=1000", "-o", "train.repeats=8", "-o", "train.lr=0.01", "-o", "eval.scatter=1"]
SMALL_MODEL = ["-o", "model.hidden=16", "-o", "model.fps_ratio=0.01"]  # the vie fixture's model, for bln / bue


@pytest.mark.slow
def test_learns_on_fixture_then_interlab_eval(cli, runs):
    """GIN-ST-FPS (hidden 16, 3 epochs of 1,000-event draws) on the vie fixture: mean test F1 > 0.5 where calling
    every event a blast scores < 0.15; then a Table 6 style eval of that run on the bln fixture (another lab)."""
    r = cli("train", "mrd-flow", "--dataset", "vie", "--fixture", "--runs-dir", runs, *QUICK, "--json")
    assert r.code == 0, r.err
    out = r.json()
    m = out["metrics"]
    assert m["f1"] > 0.5 and m["f1_all_positive"] < 0.15 and m["f1"] > 3 * m["f1_all_positive"], m
    assert m["model"] == "GIN-ST-FPS" and m["n_samples"] == 4 and m["params_total"] == n_params(
        FlowNet("gin-st-fps", 11, hidden=16))
    run = runs / "mrd-flow" / f"train-{out['run_id'][:12]}"
    for f in ("per_case.csv", "paper.md", "checkpoints/model.safetensors", "figures/learning_curves.png",
              "figures/mrd.png", "MANIFEST.sha256"):
        assert (run / f).exists(), f
    assert len(list((run / "figures").glob("scatter_*.png"))) == 1
    cases = pd.read_csv(run / "per_case.csv")
    assert len(cases) == 4 and {"sample", "f1", "precision", "recall", "mrd_true_pct", "mrd_pred_pct"} <= set(cases)
    page = (run / "paper.md").read_text()
    assert "Table 5" in page and "0.8665" in page and "not comparable" in page
    lock = json.loads((run / "data.lock.json").read_text())
    assert [len(lock["splits"][k]) for k in ("train", "val", "test")] == [8, 4, 4]

    bln = cli("eval", "mrd-flow", "--dataset", "bln", "--fixture", "--runs-dir", runs, "--run", out["run_id"][:12],
              *SMALL_MODEL, "--json")
    assert bln.code == 0, bln.err
    assert bln.json()["metrics"]["n_samples"] == 6 and bln.json()["metrics"]["f1"] > 0.3
    bln_run = Path(bln.json()["run_dir"])
    assert "Table 6" in (bln_run / "paper.md").read_text()
    assert json.loads((bln_run / "run.json").read_text())["parent"] == out["run_id"]


def test_predict_writes_event_probabilities_and_mrd(cli, runs, tmp_path):
    """predict on a glob of pickles (labels files beside them are used for F1, never scored as samples), with
    weights given as a file: per-event blast probabilities and each sample's MRD %."""
    from safetensors.torch import save_file

    from medrun.datasets import get

    root = get("vie").make_fixture(tmp_path / "data", 0)
    torch.manual_seed(0)
    weights = tmp_path / "w.safetensors"
    save_file(FlowNet("gin-st-fps", 11, hidden=16, fps_ratio=0.01).state_dict(), str(weights))
    pred = cli("predict", "mrd-flow", "--dataset", "vie", "--fixture", "--runs-dir", runs, "--checkpoint", weights,
               "-o", f"predict.input={root}/VIE_2016_*.pkl", "--json")
    assert pred.code == 0, pred.err
    assert pred.json()["metrics"]["n"] == 4
    prun = Path(pred.json()["run_dir"])
    rows = pd.read_csv(prun / "per_case.csv")
    assert list(rows["sample"]) == ["VIE_2016_000", "VIE_2016_004", "VIE_2016_008", "VIE_2016_012"]
    assert {"mrd_pred_pct", "mean_blast_prob", "f1", "mrd_true_pct"} <= set(rows)
    probs = np.load(prun / rows["probabilities"][1])
    assert probs.dtype == np.float32 and probs.ndim == 1 and ((probs >= 0) & (probs <= 1)).all()
    assert math.isclose(100 * (probs > 0.5).mean(), rows["mrd_pred_pct"][1], abs_tol=1e-4)
    assert len(list((prun / "figures").glob("scatter_*.png"))) == 3  # eval.scatter: true and predicted blasts
    bad = cli("predict", "mrd-flow", "--dataset", "vie", "--fixture", "--runs-dir", runs, "--checkpoint", weights,
              "-o", f"predict.input={root}/VIE_2016_000_labels.pkl")
    assert bad.code == 3 and "only labels files" in bad.err


# -- bad input: one line, the right exit code, nothing complete ------------------------------------------------------
@pytest.fixture(scope="module")
def vie_copy(tmp_path_factory):
    from medrun.datasets import get

    return get("vie").make_fixture(tmp_path_factory.mktemp("vie"), 0)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _nothing_complete(runs: Path) -> bool:
    return not list(runs.glob("**/MANIFEST.sha256"))


def _one_line(err: str) -> bool:
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    return len(lines) == 1 and "Traceback" not in err


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_labels_of_another_length_fail_before_training(cli, runs, vie_copy, tmp_path):
    root = _copy(vie_copy, tmp_path / "vie")
    test_sample = (root / "data_splits" / "test.txt").read_text().split()[-1].rsplit("/", 1)[-1][:-4]
    lab = root / f"{test_sample}_labels.pkl"
    pd.read_pickle(lab).iloc[:-1].to_pickle(lab)
    r = cli("train", "mrd-flow", "--dataset", "vie", "--data-dir", root, "--runs-dir", runs)
    assert r.code == 3 and f"{test_sample}_labels.pkl has 3999 rows" in r.err and "4000 events" in r.err, r.err
    assert _one_line(r.err) and _nothing_complete(runs)


def test_a_pickle_that_is_not_a_table_is_refused_unexecuted(cli, runs, vie_copy, tmp_path):
    root = _copy(vie_copy, tmp_path / "vie")
    sentinel = tmp_path / "executed"
    (root / "VIE_2016_004.pkl").write_bytes(pickle.dumps(_Evil(sentinel)))
    r = cli("train", "mrd-flow", "--dataset", "vie", "--data-dir", root, "--runs-dir", runs)
    assert r.code == 3 and "VIE_2016_004.pkl" in r.err and "refusing to load" in r.err, r.err
    assert not sentinel.exists() and _one_line(r.err) and _nothing_complete(runs)
    (root / "VIE_2016_004.pkl").write_bytes(pickle.dumps([1, 2, 3]))
    r = cli("train", "mrd-flow", "--dataset", "vie", "--data-dir", root, "--runs-dir", runs)
    assert r.code == 3 and "VIE_2016_004.pkl holds a list, not a DataFrame" in r.err, r.err
    assert _nothing_complete(runs)


def test_an_fcs_marker_the_manifest_does_not_map(cli, runs, tmp_path):
    from medrun.datasets import get

    root = get("bue").make_fixture(tmp_path, 0)  # FACSCanto FCS files: FSC-H and CD58 are not vie features
    r = cli("train", "mrd-flow", "--dataset", "vie", "--data-dir", root, "--runs-dir", runs)
    assert r.code == 3 and ".fcs: channel 'FSC-H'" in r.err and "dataset.channels.FSC-H=null" in r.err, r.err
    assert _one_line(r.err) and _nothing_complete(runs)


def test_training_on_a_test_only_lab_says_what_to_do(cli, runs):
    r = cli("train", "mrd-flow", "--dataset", "bln", "--fixture", "--runs-dir", runs)
    assert r.code == 3 and "no training samples" in r.err and "--run <train run id>" in r.err, r.err
    assert _nothing_complete(runs)


def test_manifest_errors(cli, runs):
    r = cli("train", "mrd-flow", "--dataset", "vie", "--fixture", "--runs-dir", runs,
            "-o", "model.drop_features=[CD99]")
    assert r.code == 2 and "cd99" in r.err.lower() and "drop_features" in r.err
    r = cli("benchmark", "mrd-flow", "--dataset", "vie", "--fixture", "--runs-dir", runs,
            "-o", "benchmark.models=[GIN-ST-FPS,Transformer]")
    assert r.code == 2 and "transformer" in r.err.lower()
    r = cli("train", "mrd-flow", "--dataset", "vie", "--fixture", "--runs-dir", runs, "-o", "train.epochs=0")
    assert r.code == 2
    assert _nothing_complete(runs)
