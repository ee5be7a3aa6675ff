"""fusing-forces: the simulated human (Algorithms 1–3, Eq. 1) against hand-made cases and scipy, pFM, the network at
full size, f_init beating the high-pass baseline on the fixture, the whole chain (train → simulate / eval /
refine), and bad input through the CLI."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from medrun.metrics.segmentation import pfm_from_counts, pseudo_fmeasure
from medrun.pipelines.fusing_forces import interaction as I
from medrun.pipelines.fusing_forces import pipeline as P

SIDE = "ANSA-VI-1700_R"


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _manifest(fixture=True, **over):
    from medrun.pipelines import get
    from medrun.pipelines.runner import Request, load_manifest

    m, _ = load_manifest(Request(pipeline="fusing-forces", stage="train", dataset="etmira", fixture=fixture,
                                 overrides=[f"{k}={v}" for k, v in over.items()]), get("fusing-forces"))
    return m


# -- Algorithm 3, Algorithm 2, Eq. 1 ------------------------------------------------------------------------------
def test_segments_of_a_line_and_a_t_junction():
    line = np.zeros((40, 40), bool)
    line[10, 5:35] = True  # 30 px: the two endpoints go
    assert [len(s) for s in I.segments(line)] == [28]
    t = np.zeros((40, 40), bool)
    t[10, 0:31] = True
    t[11:31, 15] = True
    assert len(I.segments(t)) == 3
    assert I.segments(np.zeros((5, 5), bool)) == []


def test_walk_orders_along_the_path_and_raster_does_not():
    s = np.zeros((20, 20), bool)
    for i in range(12):  # an L: down then right
        s[2 + i, 3] = True
    s[13, 4:15] = True
    seg = I.segments(s)[0]
    path = I.walk(seg)
    steps = np.abs(np.diff(path, axis=0)).max(1)
    assert len(path) == len(seg) and steps.max() == 1  # consecutive pixels are neighbours
    rng = np.random.default_rng(0)
    for _ in range(20):
        sub = I.sub_segment(seg, rng)
        assert 6 <= len(sub) <= 11 and np.abs(np.diff(sub, axis=0)).max() == 1


def test_get_erase_tolerates_near_and_catches_far_false_positives():
    gt = np.zeros((80, 80), bool)
    gt[30, 5:75] = True
    y = gt.copy()
    y[35, 20:40] = True  # 5 px from the GT skeleton
    y[50, 20:40] = True  # 20 px away
    fp = I.get_erase(y, gt, tolerance=9)
    assert not fp[35].any() and fp[50].sum() >= 15 and fp.sum() == fp[50].sum()
    fn = I.get_add(np.zeros_like(gt), gt)
    assert (fn == gt).all()


def test_stroke_paste_and_merge():
    y = np.zeros((30, 30), bool)
    gt = np.zeros((30, 30), bool)
    gt[15, 2:28] = True
    st = I.simulate(y, gt, np.zeros((30, 30), np.int8), np.random.default_rng(0), 2.0, policy="longest")
    assert st.op == "add" and st.pixels == int((st.delta == 1).sum()) > 11
    core = np.argwhere(st.delta == 1)
    assert core[:, 0].min() >= 13 and core[:, 0].max() <= 17  # 11 px dilated twice with the cross
    pasted = I.paste(y, st.delta)
    assert (pasted == (st.delta == 1)).all()
    erase = np.zeros_like(st.delta)
    erase[15, :] = 1
    merged = I.merge(st.delta, erase.astype(bool), -1)
    assert (merged[st.delta == 1] == 1).all() and (merged[(st.delta == 0) & erase.astype(bool)] == -1).all()
    assert (I.paste(np.ones_like(y), merged) == (merged != -1)).all()


def test_f_iter_input_is_x_delta_y_and_the_options_change_it():
    m = _manifest()
    x, yl, d = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8), torch.randint(-1, 2, (2, 1, 8, 8), dtype=torch.int8)
    inp = P.Hints(m).inputs(x, yl, d)
    assert inp.shape == (2, 3, 8, 8) and torch.equal(inp[:, 0:1], x) and torch.equal(inp[:, 1:2], d.float())
    assert torch.equal(inp[:, 2:3], (yl > 0).float())
    logits = _manifest(**{"model.y_as_logits": "true"})
    assert torch.equal(P.Hints(logits).inputs(x, yl, d)[:, 2:3], yl)
    assert P.Hints(_manifest(**{"model.iter_inputs": "x+delta"})).inputs(x, yl, d).shape[1] == 2
    seg = np.argwhere(np.eye(20, dtype=bool)[::-1])  # an anti-diagonal, given in raster (row-major) order
    raster = I.sub_segment(seg, np.random.default_rng(1), raster=True)
    assert (np.diff(raster[:, 0]) == 1).all()  # consecutive rows in raster order


# -- Algorithm 1 -----------------------------------------------------------------------------------------------
def test_gamma_fit_recovers_the_papers_distribution():
    from scipy.stats import gamma

    vals = gamma.rvs(49.13, loc=-4.28, scale=0.21317, size=20000, random_state=0)
    fit = I.fit_widths(vals)
    assert fit.mu == pytest.approx(6.19, abs=0.1) and fit.sigma == pytest.approx(1.4, abs=0.15)  # after the 2σ cut
    assert fit.gamma_mean == pytest.approx(fit.mu, abs=0.02)
    assert np.sqrt(fit.a) * fit.scale == pytest.approx(fit.sigma, rel=0.05)


def test_widths_of_the_fixture_drawings_match_its_generator(tmp_path):
    from medrun.datasets import etmira

    root = etmira.fixture(tmp_path, 0)
    vals = np.concatenate([I.skeleton_widths(etmira.load(s)[1]) for s in etmira.sides(root)])
    fit = I.fit_widths(vals)
    hw, sd = etmira.FIXTURE_HALF_WIDTH
    assert fit.mu == pytest.approx(hw + 0.5, abs=0.4)  # EDT at the centre of a |d| ≤ hw band ≈ hw + ½
    assert fit.sigma < 2 * sd + 0.3 and fit.gamma_mean == pytest.approx(fit.mu, abs=0.05)


# -- pFM -------------------------------------------------------------------------------------------------------
def test_pfm_is_one_for_a_perfect_mask_and_matches_hand_counts():
    from skimage.morphology import skeletonize

    gt = np.zeros((40, 40), bool)
    gt[18:23, 5:35] = True
    assert pseudo_fmeasure(gt, gt) == {**pseudo_fmeasure(gt, gt), "pfm": 1.0, "precision": 1.0, "p_recall": 1.0}
    pred = np.zeros_like(gt)
    pred[18:23, 5:20] = True
    pred[0:2, 0:10] = True  # 20 false positives
    sk = skeletonize(gt)
    p = (pred & gt).sum() / pred.sum()
    pr = (pred & sk).sum() / sk.sum()
    r = pseudo_fmeasure(pred, gt)
    assert r["precision"] == pytest.approx(p) and r["p_recall"] == pytest.approx(pr)
    assert r["pfm"] == pytest.approx(2 * p * pr / (p + pr))
    assert pfm_from_counts(0, 0, 0, 0)["pfm"] == 1.0 and pseudo_fmeasure(pred, np.zeros_like(gt))["pfm"] == 0.0


def test_high_pass_is_normalised_over_the_mirror():
    from medrun.pipelines.fusing_forces.data import high_pass

    rng = np.random.default_rng(0)
    depth = rng.normal(0, 1, (64, 64)).astype(np.float32) + np.linspace(0, 50, 64)[None]
    mask = np.zeros((64, 64), bool)
    mask[8:56, 8:56] = True
    x, st = high_pass(depth, mask, 4.0, 3.0)
    assert abs(x[mask].mean()) < 1e-5 and x[mask].std() == pytest.approx(1, abs=1e-4) and (x[~mask] == 0).all()
    assert np.abs(x[mask]).max() <= (3 * st["hp_sd"] + abs(st["hp_mean"] - st["norm_mean"])) / st["norm_sd"] + 1e-4


# -- the network at full size -----------------------------------------------------------------------------------
def test_full_size_flexible_unet_b6():
    m = _manifest(fixture=False)
    assert m.model.backbone == "efficientnet-b6" and m.dataset.net_size == 256
    f_iter, f_init = P.build_unet(m.model, P.iter_channels(m.model)), P.build_unet(m.model, 1)
    assert sum(p.numel() for p in f_iter.parameters()) == 45_475_601
    assert sum(p.numel() for p in f_init.parameters()) == 45_475_601 - 2 * 56 * 9  # stem: 56 filters of 3×3
    with torch.no_grad():
        assert f_iter.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 64, 64)


def test_warm_start_makes_f_iter_equal_f_init():
    m = _manifest()
    f_init = P.build_unet(m.model, 1).eval()
    f_iter = P.warm_start(P.build_unet(m.model, 3), f_init, m.model).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        y = f_init(x)
        assert torch.allclose(f_iter(torch.cat([x, torch.randn(2, 2, 64, 64)], 1)), y, atol=1e-5)


# -- through the CLI --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_learns_f_init_beats_the_high_pass_baseline(cli, runs):
    """The card's first smoke check: f_init (b0, 64², 4 epochs of 17 steps) beats the thresholded high-pass on pFM."""
    r = cli("train-init", "fusing-forces", "--dataset", "etmira", "--fixture", "--runs-dir", runs, "--json")
    assert r.code == 0, r.err
    m = r.json()["metrics"]
    assert m["pfm"] > m["pfm_highpass"] + 0.02 and m["pfm"] > 0.45, m
    run = runs / "fusing-forces" / f"train-init-{r.json()['run_id'][:12]}"
    for f in ("per_case.csv", "paper.md", "checkpoints/model.safetensors", "figures/learning_curves.png"):
        assert (run / f).exists(), f
    assert "49.28" in (run / "paper.md").read_text()


@pytest.mark.slow
def test_chain_train_simulate_eval_refine(cli, runs, tmp_path):
    """One epoch each: the train stage runs its train-init child, then simulate, eval and refine on that run."""
    fast = ["-o", "train_init.epochs=1", "-o", "train.epochs=1", "-o", "dataset.patches_per_tile=1"]
    base = ["fusing-forces", "--dataset", "etmira", "--fixture", "--runs-dir", runs, "--json", *fast]
    tr = cli("train", *base)
    assert tr.code == 0, tr.err
    m = tr.json()["metrics"]
    assert {"pfm", "pfm_y", "pfm_manual", "pfm_delta", "f_init_run", "init_minus_highpass"} <= set(m)
    train_dir = runs / "fusing-forces" / f"train-{tr.json()['run_id'][:12]}"
    assert (train_dir / "checkpoints" / "f_init.safetensors").exists()
    sim = cli("simulate", *base, "-o", "simulate.max_interactions=6", "-o", "simulate.modes=[both,add]")
    assert sim.code == 0, sim.err
    sm = sim.json()["metrics"]
    assert 1 <= sm["interactions"] <= 6 and sm["monotone_fraction"] == 1.0 and sm["pfm_end"] >= sm["pfm_start"]
    sim_dir = runs / "fusing-forces" / f"simulate-{sim.json()['run_id'][:12]}"
    for f in ("curves.csv", "manual.csv", "workload.csv", "table2.csv", "figures/curves.png",
              f"figures/mirror_{SIDE}.png", "paper.md"):
        assert (sim_dir / f).exists(), f
    assert "76.56" in (sim_dir / "paper.md").read_text()
    ev = cli("eval", *base, "-o", "eval.repeats=1", "-o", "eval.widths=[mu]")
    assert ev.code == 0, ev.err
    assert {"pfm", "pfm_delta", "pfm_init", "pfm_y_only", "pfm_delta_add_only"} <= set(ev.json()["metrics"])
    strokes = np.zeros((64, 64, 3), np.uint8)
    strokes[30:33, 10:30, 0] = 255
    Image.fromarray(strokes).save(tmp_path / "s.png")
    rf = cli("refine", *base, "-o", f"refine.side={SIDE}", "-o", "refine.x=192", "-o", "refine.y=128",
             "-o", f"refine.strokes={tmp_path / 's.png'}")
    assert rf.code == 0, rf.err
    assert rf.json()["metrics"]["stroke_add_px"] == 60
    ref_dir = runs / "fusing-forces" / f"refine-{rf.json()['run_id'][:12]}"
    assert (ref_dir / "refined.png").exists() and (ref_dir / "figures" / "refine_before_after.png").exists()


@pytest.fixture
def weights(tmp_path):
    from medrun.pipelines import training

    m = _manifest()
    torch.manual_seed(0)
    it, ini = tmp_path / "f_iter.safetensors", tmp_path / "f_init.safetensors"
    training.save_weights(P.build_unet(m.model, 3), it)
    training.save_weights(P.build_unet(m.model, 1), ini)
    return it, ini


def _complete(runs, stage):
    return [p for p in (runs / "fusing-forces").glob(f"{stage}-*") if (p / "MANIFEST.sha256").exists()]


def test_refine_with_user_weights_and_a_stroke_png_of_the_wrong_size(cli, runs, tmp_path, weights):
    it, ini = weights
    args = ["refine", "fusing-forces", "--dataset", "etmira", "--fixture", "--runs-dir", runs, "--checkpoint", it,
            "-o", f"model.init_ckpt={ini}", "-o", f"refine.side={SIDE}", "-o", "refine.x=192", "-o", "refine.y=128"]
    Image.new("RGB", (64, 50)).save(tmp_path / "bad.png")
    r = cli(*args, "-o", f"refine.strokes={tmp_path / 'bad.png'}")
    assert r.code == 3, r.err
    line = [ln for ln in r.err.splitlines() if ln.startswith("error")]
    assert len(line) == 1 and "bad.png is 64×50 but the patch is 64×64" in line[0]
    assert not _complete(runs, "refine")
    r = cli(*args)
    assert r.code == 2 and "refine needs a patch and strokes" in r.err
    good = np.zeros((64, 64, 4), np.uint8)
    good[5:8, 40:50] = (0, 0, 255, 255)
    Image.fromarray(good, "RGBA").save(tmp_path / "good.png")
    r = cli(*args, "-o", f"refine.strokes={tmp_path / 'good.png'}", "--json")
    assert r.code == 0, r.err
    assert r.json()["metrics"]["stroke_erase_px"] == 30 and r.json()["metrics"]["stroke_add_px"] == 0
    r = cli("refine", "fusing-forces", "--dataset", "etmira", "--fixture", "--runs-dir", runs, "--checkpoint", it,
            "-o", f"refine.side={SIDE}", "-o", f"refine.strokes={tmp_path / 'good.png'}")
    assert r.code == 2 and "model.init_ckpt" in r.err


def test_bad_data_through_the_cli(cli, runs, tmp_path):
    r = cli("prepare", "fusing-forces", "--dataset", "etmira", "--fixture", "--runs-dir", runs,
            "-o", "dataset.test_mirrors=[wels-11944_R]")
    assert r.code == 3 and "wels-11944_R" in r.err and "dataset.test_mirrors" in r.err
    r = cli("prepare", "fusing-forces", "--dataset", "etmira", "--fixture", "--runs-dir", runs,
            "-o", "dataset.depth_suffix=DEPTH")
    assert r.code == 3 and "_DEPTH.tif" in r.err and "depth_suffix" in r.err
    r = cli("prepare", "fusing-forces", "--dataset", "etmira", "--data-dir", tmp_path, "--runs-dir", runs)
    assert r.code == 3 and "GT_REL" in r.err
    assert not _complete(runs, "prepare")
    r = cli("prepare", "fusing-forces", "--dataset", "etmira", "--fixture", "--runs-dir", runs, "--json")
    assert r.code == 0, r.err
    m = r.json()["metrics"]
    assert m["sides"] == 4 and m["masks_otsu"] == 1 and m["val_patches"] + m["test_patches"] >= 15
    run = runs / "fusing-forces" / f"prepare-{r.json()['run_id'][:12]}"
    assert len(list((run / "figures").glob("side_*.png"))) == 4
    assert json.loads((run / "data.lock.json").read_text())["splits"]["val"]


def test_stats_on_the_fixture(cli, runs):
    r = cli("stats", "fusing-forces", "--dataset", "etmira", "--fixture", "--runs-dir", runs, "--json")
    assert r.code == 0, r.err
    m = r.json()["metrics"]
    assert 3.0 < m["mu"] < 4.0 and m["gamma_mean"] == pytest.approx(m["mu"], abs=0.05) and m["n_kept"] < m["n_values"]
    run = runs / "fusing-forces" / f"stats-{r.json()['run_id'][:12]}"
    assert (run / "figures" / "stroke_widths.png").exists() and "6.19" in (run / "paper.md").read_text()
