"""totalct-sam: learning on the fixture, eval/predict on the finished run, metrics, clicks, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medrun.pipelines.totalct_sam.pipeline import case_scores, simulate_clicks

SLUG, DS = "totalct-sam", "totalsegmentator"


@pytest.fixture(autouse=True)
def _one_thread():
    """On the shared 2-core machine one intra-op thread is ~10× faster than two contending ones."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_case_scores_per_present_class():
    gt = np.zeros((4, 4, 4), np.int16)
    gt[:2] = 1  # class a: 32 voxels
    gt[3, :2] = 3  # class c: 8 voxels; class b absent (not averaged)
    pred = np.zeros_like(gt)
    pred[:1] = 1  # half of a
    pred[3, :2] = 3  # all of c
    pred[2, 0, 0] = 2  # a false positive of the absent class b: ignored
    scores, per_class = case_scores(pred, gt, ["a", "b", "c"])
    assert set(per_class) == {"a", "c"}
    assert per_class["a"]["dice"] == pytest.approx(2 * 16 / (16 + 32)) and per_class["a"]["iou"] == pytest.approx(0.5)
    assert per_class["a"]["recall"] == pytest.approx(0.5) and per_class["c"]["dice"] == 1
    assert scores["dice"] == pytest.approx((2 / 3 + 1) / 2) and scores["accuracy"] == pytest.approx(0.75)
    assert scores["pixel_accuracy"] == pytest.approx(1 - 17 / 64) and scores["n_classes"] == 2


def test_click_simulation():
    torch.manual_seed(0)
    label = torch.zeros(2, 8, 8, 8, dtype=torch.long)
    label[0, :4] = 2
    label[1, 4:, 4:] = 1
    pred = torch.zeros_like(label)
    pred[1, :, :] = 1  # over-segments class 1 in volume 1
    for _ in range(10):
        (coords, labels), target = simulate_clicks(label, pred, max_clicks=5)
        assert coords.shape[:2] == labels.shape and target.shape == (2, 1, 8, 8, 8)
        for b in range(2):
            first = tuple(coords[b, 0].long().tolist())
            assert labels[b, 0] == 1 and target[b, 0][first] == 1  # first click inside the class
            for j in range(1, labels.shape[1]):
                if labels[b, j] >= 0:
                    v = tuple(coords[b, j].long().tolist())
                    assert labels[b, j] == int(target[b, 0][v])  # positive on misses, negative on false positives
    empty = torch.zeros(1, 4, 4, 4, dtype=torch.long)
    assert simulate_clicks(empty, empty, 3)[0] is None


@pytest.mark.slow
def test_learns_on_fixture_then_eval_predict(cli, runs, tmp_path):
    """A smaller smoke: 24 epochs × 5 steps without flips (they hide the left/right position cue), val Dice
    clearly above chance (≈0) in about a minute on 2 cores."""
    small = ("--dataset", DS, "--fixture", "--runs-dir", runs, "-o", "train.epochs=24", "-o", "dataset.flip_prob=0")
    r = cli("train", SLUG, *small, "--json")
    assert r.code == 0, r.err
    out = r.json()
    # chance (random labels) is ≈0.02–0.06 per organ, all-background 0; the full 400-step smoke reaches ≥ 0.6
    assert out["metrics"]["dice"] >= 0.1, out["metrics"]
    assert out["metrics"]["per_class"]["liver"]["dice"] >= 0.4, out["metrics"]["per_class"]
    run = runs / SLUG / f"train-{out['run_id'][:12]}"
    for f in ("classes.json", "per_case.csv", "per_class.csv", "paper.md", "checkpoints/model.safetensors",
              "figures/learning_curves.png", "MANIFEST.sha256"):
        assert (run / f).exists(), f
    assert json.loads((run / "classes.json").read_text())["liver"] == 3
    assert "Table 2" in (run / "paper.md").read_text() and "liver" in (run / "paper.md").read_text()
    assert list((run / "figures").glob("overlay_*.png"))
    assert out["metrics"]["memory_entries"] == 512

    ev = cli("eval", SLUG, *small, "--json")
    assert ev.code == 0, ev.err
    assert ev.json()["metrics"]["dice"] == pytest.approx(out["metrics"]["dice"])  # memory frozen, same weights
    test = cli("eval", SLUG, *small, "--split", "test", "--json")
    assert test.code == 0 and test.json()["metrics"]["n_cases"] == 1

    pred = cli("predict", SLUG, *small, "--json")
    assert pred.code == 0, pred.err
    pdir = runs / SLUG / f"predict-{pred.json()['run_id'][:12]}" / "predictions"
    import nibabel as nib

    assert nib.load(pdir / "s0005.nii.gz").shape == (48, 48, 48)
    point = cli("predict", SLUG, *small, "-o", "predict.point=[20,24,26]", "--json")
    assert point.code == 0, point.err
    assert point.json()["metrics"]["mode"] == "point"
    clicked = runs / SLUG / f"predict-{point.json()['run_id'][:12]}" / "predictions" / "s0005_point.nii.gz"
    assert set(np.unique(np.asarray(nib.load(clicked).dataobj))) <= {0, 1}
    own_volumes_predicted_in_their_own_geometry(cli, small, pdir, tmp_path)


def own_volumes_predicted_in_their_own_geometry(cli, small, pdir, tmp_path):
    """Issue 21: a user's CT as an oblique, anisotropic NIfTI and as a DICOM series (slope 0.5, intercept −1024):
    each label map comes back on the input's own voxel grid with the input's affine, and a stray file is named."""
    import csv

    import nibabel as nib

    from medrun.datasets import imageio, ricord

    with open(pdir.parent / "per_case.csv") as f:
        source = next(r["input"] for r in csv.DictReader(f) if r["case"] == "s0005")
    hu = np.asarray(nib.load(source).dataobj, dtype=np.float32)[:, :, ::2]  # 48 × 48 × 24
    own = tmp_path / "own"
    own.mkdir()
    oblique = np.array([[-1.5, 0, 0, 40.0], [0, 1.4, 0.3, -20.0], [0, -0.2, 3.0, 5.0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(hu.astype(np.int16), oblique), own / "patient1.nii.gz")
    ricord.write_series(own / "patient2", np.ascontiguousarray(hu[:, :, :12].transpose(2, 1, 0)), case="p2",
                        study="1.2.3", series="1.2.3.4", spacing=1.5, thickness=3.0, description="CT", sex="F",
                        age=60, seed=0)
    (own / "notes.txt").write_text("not an image")
    r = cli("predict", SLUG, *small, "-o", f"predict.input={own}", "--json")
    assert r.code == 0, r.err
    assert "skipped" in r.err and "notes.txt" in r.err
    out = pdir.parent.parent / f"predict-{r.json()['run_id'][:12]}" / "predictions"
    for name, given in (("patient1", own / "patient1.nii.gz"), ("patient2", own / "patient2")):
        src, pred = imageio.read(given), nib.load(out / f"{name}.nii.gz")
        assert pred.shape == src.array.shape, name
        np.testing.assert_allclose(pred.affine, src.affine, atol=1e-4)
        assert pred.get_data_dtype() == np.uint8 and np.asarray(pred.dataobj).any(), name


def test_ablation_and_full_size_dry_run(cli, runs):
    full = cli("train", SLUG, "--dataset", DS, "--fixture", "--runs-dir", runs, "--dry-run", "--json",
               "-o", "model.img_size=128", "-o", "model.patch_size=16", "-o", "model.embed_dim=768",
               "-o", "model.depth=12", "-o", "model.num_heads=12", "-o", "model.window_size=14",
               "-o", "model.global_attn_indexes=[2,5,8,11]", "-o", "model.prompt_dim=384",
               "-o", "model.decoder_depth=2", "-o", "model.decoder_mlp_dim=2048", "-o", "model.memory_size=16")
    assert full.code == 0, full.err
    ablation = cli("train", SLUG, "--dataset", DS, "--fixture", "--runs-dir", runs, "--dry-run", "--json",
                   "-o", "model.memory=false")
    small = cli("train", SLUG, "--dataset", DS, "--fixture", "--runs-dir", runs, "--dry-run", "--json")
    assert small.json()["params_total"] - ablation.json()["params_total"] == 3 * (96 * 48 + 48) + 48 * 96 + 96 + 200
    # dry-run builds with the v1 default of 104 classes (the dataset is read only when a stage runs)
    assert full.json()["params_total"] == 100_863_712 + 296_648


def test_bad_class_name(cli, runs):
    r = cli("train", SLUG, "--dataset", DS, "--fixture", "--runs-dir", runs, "-o", "dataset.classes=[liver,splen]")
    assert r.code == 2 and "unknown class 'splen'" in r.err and "spleen" in r.err and "segmentations" in r.err
    assert "Traceback" not in r.err
    assert not list((runs / SLUG).glob("*/MANIFEST.sha256"))  # nothing marked complete


def test_segmentation_shape_mismatch(cli, runs, tmp_path):
    import nibabel as nib

    from medrun.datasets import get

    root = get(DS).make_fixture(tmp_path / "d", 0)
    bad = root / "s0006" / "segmentations" / "spleen.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((48, 48, 40), np.uint8), np.diag([-1.5, -1.5, 1.5, 1])), bad)
    r = cli("train", SLUG, "--dataset", DS, "--data-dir", root, "--runs-dir", runs, "-o", "train.epochs=1",
            "-o", "model.img_size=32", "-o", "model.patch_size=8", "-o", "model.embed_dim=48", "-o", "model.depth=1",
            "-o", "model.num_heads=4", "-o", "model.window_size=4", "-o", "model.global_attn_indexes=[0]",
            "-o", "model.prompt_dim=48", "-o", "model.decoder_depth=1", "-o", "model.decoder_mlp_dim=96",
            "-o", "model.memory_size=64", "-o", "train.cache=true")
    assert r.code == 3, r.err
    assert str(bad) in r.err and "(48, 48, 40)" in r.err and "Traceback" not in r.err
    assert not list((runs / SLUG).glob("*/MANIFEST.sha256"))


@pytest.mark.parametrize("kind", ["corrupt", "sam2d"])
def test_bad_sammed3d_checkpoint(cli, runs, tmp_path, kind):
    path = tmp_path / "sam_med3d.pth"
    if kind == "corrupt":
        path.write_bytes(b"\x80\x04 not a checkpoint")
    else:
        torch.save({"model_state_dict": {"image_encoder.patch_embed.proj.weight": torch.zeros(96, 3, 8, 8)}}, path)
    r = cli("train", SLUG, "--dataset", DS, "--fixture", "--runs-dir", runs, "-o", f"model.sammed3d_checkpoint={path}")
    assert r.code == (3 if kind == "corrupt" else 2), r.err
    assert str(path) in r.err and "Traceback" not in r.err
    assert not list((runs / SLUG).glob("*/MANIFEST.sha256"))


def test_sammed3d_checkpoint_reports_new_keys(cli, runs, tmp_path):
    """A checkpoint of the same (small) SAM-Med3D layout: only the new modules are missing."""
    from medrun.models.sam3d import Sam3D, Sam3dConfig

    cfg = Sam3dConfig(img_size=32, patch_size=8, embed_dim=96, depth=2, num_heads=4, window_size=4,
                      global_attn_indexes=(1,), prompt_dim=96, decoder_depth=1, decoder_mlp_dim=192)
    path = tmp_path / "sam_med3d_turbo.pth"
    torch.save({"model_state_dict": Sam3D(cfg).state_dict(), "epoch": 3}, path)
    r = cli("train", SLUG, "--dataset", DS, "--fixture", "--runs-dir", runs, "-o", f"model.sammed3d_checkpoint={path}",
            "-o", "train.epochs=1", "--json")
    assert r.code == 0, r.err
    run = runs / SLUG / f"train-{r.json()['run_id'][:12]}"
    info = json.loads((run / "sammed3d_load.json").read_text())
    assert info["unexpected"] == [] and info["missing"]
    assert all(k.startswith(("mask_decoder.class_tokens", "mask_decoder.class_hypernetwork",
                             "mask_decoder.image_token_block")) for k in info["missing"])


# -- issue 22: Table 3 as a paired sweep, UNETR / SwinUNETR baselines, SAM-Med3D zero-shot -------------------------
def _manifest(**over):
    from medrun.pipelines import get
    from medrun.pipelines.runner import Request, load_manifest

    m, _ = load_manifest(Request(pipeline=SLUG, stage="train", dataset=DS, fixture=True,
                                 overrides=[f"{k}={v}" for k, v in over.items()]), get(SLUG))
    return m


def _n(net):
    return sum(p.numel() for p in net.parameters())


def test_baseline_parameter_counts_at_the_paper_configuration(monkeypatch):
    """128³ crops, 104 classes + background, MONAI's published sizes; built on the meta device (no memory).
    Paper: UNETR 94.86 M (its UNETR is not described); SwinUNETR is not in the paper."""
    import monai.networks.nets.swin_unetr as swin

    from medrun.models import create

    linspace = torch.linspace  # SwinUNETR turns a linspace into floats, which the meta device cannot
    monkeypatch.setattr(swin.torch, "linspace", lambda *a, **k: linspace(*a, **{**k, "device": "cpu"}))
    with torch.device("meta"):
        assert _n(create("totalct-unetr", num_classes=104, img_size=128)) == 93_031_353
        assert _n(create("totalct-swinunetr", num_classes=104)) == 62_191_755


def test_baseline_trains_through_the_pipeline_module():
    """model.arch builds the baseline at the fixture's sizes; one training step on the semantic loss alone puts
    every weight in the train.lr_new group and reaches them all; eval's sliding window calls .semantic."""
    from medrun.pipelines.totalct_sam.pipeline import TotalCTSam, _lit

    m = _manifest(**{"model.arch": "unetr", "model.feature_size": 8, "train.lr": 1e-7, "train.lr_new": 1e-2})
    net = TotalCTSam(m).build_model(num_classes=4)
    lit = _lit(net, m.train)
    lit.log = lambda *a, **k: None
    opt = lit.configure_optimizers()
    assert [len(g["params"]) for g in opt.param_groups] == [0, len(list(net.parameters()))]
    assert opt.param_groups[1]["lr"] == 1e-2
    torch.manual_seed(0)
    x, y = torch.randn(1, 1, 32, 32, 32), torch.randint(0, 5, (1, 1, 32, 32, 32))
    loss = lit.training_step({"image": x, "label": y}, 0)
    loss.backward()
    unused = "norm_cross_attn"  # MONAI's transformer blocks carry a cross-attention norm they never call
    assert torch.isfinite(loss) and all(p.grad is not None for n, p in net.named_parameters() if unused not in n)
    with torch.no_grad():
        assert net.semantic(x).shape == (1, 5, 32, 32, 32)


def test_manifest_refuses_what_a_baseline_cannot_do():
    from pydantic import ValidationError

    from medrun.errors import UsageError
    from medrun.pipelines.totalct_sam.config import Model
    from medrun.pipelines.totalct_sam.pipeline import TotalCTSam

    with pytest.raises(ValidationError, match="multiple of 32"):
        Model(arch="swinunetr", img_size=48, patch_size=16)
    with pytest.raises(ValidationError, match="one voxel"):  # the fixture's 32³ crops
        Model(arch="swinunetr", img_size=32, patch_size=8)
    with pytest.raises(ValidationError, match="initialises totalct-sam only"):
        Model(arch="unetr", sammed3d_checkpoint="sam_med3d.pth")
    m = _manifest(**{"model.arch": "unetr", "predict.point": "[1,2,3]"})
    with pytest.raises(UsageError, match="no prompt path"):
        TotalCTSam(m).predict_rows(None, [])


class _Ctx:
    """What the sweep stages use of a StageContext: a canned sweep and captured writes."""

    def __init__(self, runs, stage):
        from medrun.pipelines import get

        self.spec, self.stage, self.fixture, self.data_roots = get(SLUG), stage, True, {"data": "fixture"}
        self.runs, self.children, self.files = runs, None, {}
        self.run = type("R", (), {"info": lambda self: {"id": "f" * 64}})()

    def sweep(self, children, title):
        self.children = children
        return self.runs[: len(children)]

    def write_csv(self, rel, rows):
        self.files[rel] = rows

    def write_text(self, rel, text):
        self.files[rel] = text


def _child_run(tmp_path, name, metrics, cases=()):
    from medrun.pipelines.sweep import Child, ChildRun

    d = tmp_path / name
    d.mkdir()
    (d / "per_case.csv").write_text("case,dice,iou,accuracy\n" + "".join(f"{c},{a},{b},{r}\n" for c, a, b, r in cases))
    return ChildRun(Child(name), name.ljust(64, "0"), d, metrics, False)


def test_ablate_stage_pairs_the_variants_beside_table3(tmp_path):
    from medrun.pipelines.totalct_sam.ablate import ablate
    from medrun.pipelines.totalct_sam.pipeline import TotalCTSam

    base = {"params_total": 1_000_000, "secs_per_case": 0.5}
    with_mem = _child_run(tmp_path, "with", {"dice": 0.8, "iou": 0.7, "accuracy": 0.85, **base,
                                             "params_total": 1_296_648},
                          [("s5", 0.9, 0.8, 0.9), ("s6", 0.7, 0.6, 0.8)])
    without = _child_run(tmp_path, "without", {"dice": 0.75, "iou": 0.65, "accuracy": 0.8, **base},
                         [("s6", 0.72, 0.6, 0.7), ("s5", 0.8, 0.7, 0.9)])
    pipe = TotalCTSam(_manifest())
    pipe.ctx = ctx = _Ctx([with_mem, without], "ablate")
    m = ablate(pipe)
    assert [c.overrides for c in ctx.children] == [{"model.arch": "totalct-sam", "model.memory": True},
                                                   {"model.arch": "totalct-sam", "model.memory": False}]
    assert m["gain_dice"] == pytest.approx(0.05) and m["memory_params"] == 296_648
    # paired by case id, not by row order: s5 +0.1, s6 −0.02
    assert m["paired_dice_gain"] == pytest.approx(0.04) and m["memory_helps_cases"] == 1
    assert m["paired_dice_gain_sd"] == pytest.approx(np.std([0.1, -0.02], ddof=1))
    page = ctx.files["paper.md"]
    assert "Table 3" in page and "| without memory | paper | 80.66 | 67.59 | 79.89 | 13.88 M |" in page
    assert "| memory gain | paper | 2.77 | 3.98 | 2.44 | 0.30 M |" in page and "296,648" in page
    assert [r["case"] for r in ctx.files["per_case_pairs.csv"]] == ["s5", "s6"]


def test_baselines_stage_children_and_table1_page(tmp_path):
    from medrun.pipelines.totalct_sam.baselines import baselines
    from medrun.pipelines.totalct_sam.pipeline import TotalCTSam

    def run(name, dice, **extra):
        return _child_run(tmp_path, name, {"dice": dice, "iou": dice - 0.1, "accuracy": dice + 0.05,
                                           "params_total": 2e6, "secs_per_case": 0.3, **extra})

    runs = [run("t", 0.8), run("u", 0.6), run("s", 0.7), run("z", 0.1, pretrained=False)]
    pipe = TotalCTSam(_manifest(**{"baselines.archs": "[totalct-sam,unetr,swinunetr]"}))
    pipe.ctx = ctx = _Ctx(runs, "baselines")
    m = baselines(pipe)
    assert m["models"] == ["totalct-sam", "unetr", "swinunetr", "sammed3d-zeroshot"]
    assert ctx.children[2].overrides["model.img_size"] == 64 and "model.img_size" not in ctx.children[1].overrides
    z = ctx.children[-1]
    assert z.stage == "zeroshot" and all(c.stage == "train" for c in ctx.children[:-1])
    # each child has baselines.* at its default, so it is the plain `medrun train -o model.arch=…` run
    assert all(c.overrides["baselines.archs"] == ["totalct-sam", "unetr", "swinunetr"] for c in ctx.children)
    assert m["unetr.dice"] == 0.6 and m["zeroshot.dice"] == 0.1
    page = ctx.files["paper.md"]
    assert "| unetr | 60.00 | 77.22 |" in page and "| SAM-Med3D zero-shot | 10.00 | 80.94 |" in page
    assert "random init: not SAM-Med3D's numbers" in page and "not in the paper" in page
    assert "nnU-Net" in page and "not reproduced" in page and "TransUNet" in page


def test_zeroshot_clicks_and_window():
    """The first click is the structure's innermost voxel; the window (padded when the volume is smaller) is
    centred on it and clamped; a second click goes to the larger error region with its sign; the mask returns
    on the volume's grid."""
    from medrun.pipelines.totalct_sam.zeroshot import innermost, segment_structure

    gt = np.zeros((24, 40, 20), bool)
    gt[4:11, 21:28, 6:13] = True  # a 7³ box: its innermost voxel is its centre
    assert innermost(gt) == (7, 24, 9)
    calls = []

    def pred(run, win, coords, labels):  # "network": a 5³ cube around the first click
        calls.append((win.shape, coords.clone(), labels.clone()))
        out = -torch.ones(1, 1, *win.shape[2:])
        c = coords[0, 0].long()
        out[0, 0, c[0] - 2:c[0] + 3, c[1] - 2:c[1] + 3, c[2] - 2:c[2] + 3] = 1
        return out

    image = torch.zeros(1, *gt.shape)
    mask = segment_structure(pred, None, image, gt, 32, clicks=2)
    assert mask.shape == gt.shape and mask.sum() == 125 and mask[7, 24, 9]
    (shape1, c1, l1), (_, c2, l2) = calls
    assert shape1 == (1, 1, 32, 32, 32) and l1.tolist() == [[1]]
    start = [0, 24 - 16, 0]  # x, z padded to 32 (window at 0); y centred on the click
    assert c1[0, 0].tolist() == [7 - start[0], 24 - start[1], 9 - start[2]]
    assert l2.tolist() == [[1, 1]] and gt[tuple(int(v) + o for v, o in zip(c2[0, 1], start, strict=True))]


def test_zeroshot_network_answers_a_click_at_window_size():
    from medrun.models.sam3d import Sam3D
    from medrun.pipelines.totalct_sam.pipeline import TotalCTSam
    from medrun.pipelines.totalct_sam.zeroshot import clicked_mask

    net = Sam3D(TotalCTSam(_manifest()).sam3d_config(0)).eval()
    with torch.no_grad():
        out = clicked_mask(net, torch.randn(1, 1, 32, 32, 32), torch.tensor([[[10.0, 12.0, 14.0]]]),
                           torch.tensor([[1]]))
    assert out.shape == (1, 1, 32, 32, 32) and net.cfg.num_classes == 0
