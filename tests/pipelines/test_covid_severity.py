"""covid-severity: the grading rules and metrics against references, the classical steps on phantoms (full 512²
size included), the card's smoke check through the CLI on the fixture (segment → eval, grade on annotations), and
bad input (missing lobes, missing slices, mixed orientations, a grades sheet naming no case)."""

import json
import math
import shutil
import sys

import numpy as np
import pytest

from medrun.datasets import ricord
from medrun.pipelines.covid_severity import method
from medrun.pipelines.covid_severity.evaluate import age_band, agreement, fairness


# -- step 8 and the metrics ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("pct,score", [(0, 0), (1e-6, 1), (4.99, 1), (5, 2), (25, 2), (25.01, 3), (49.99, 3), (50, 4),
                                       (75, 4), (75.01, 5), (100, 5)])
def test_lobe_score_uses_the_cards_half_open_bins(pct, score):
    assert method.lobe_score(pct) == score == ricord.score_of(pct)


def test_severity_classes_and_ctss():
    assert [method.severity(c) for c in (0, 7, 8, 15, 16, 25)] == [0, 0, 1, 1, 2, 2]
    assert [method.severity(c, 4) for c in (0, 1, 7, 8, 15, 16)] == [0, 1, 1, 2, 2, 3]  # the code's 'none' class
    g = method.grade([100, 200, 100, 50, 0], [0, 10, 30, 50, 0])
    assert g["scores"] == [0, 2, 3, 5, 0] and g["ctss"] == 10 and g["severity"] == "moderate"
    assert g["missing_lobes"] == [5] and math.isnan(g["involvement"][4])


def test_agreement_against_references():
    from sklearn.metrics import cohen_kappa_score

    from medrun.metrics.classification import coverage

    rng = np.random.default_rng(1)
    truth = rng.integers(0, 26, 60)
    pred = np.clip(truth + rng.integers(-4, 5, 60), 0, 25)
    a = agreement(truth, pred)
    assert a["qwk_ctss"] == pytest.approx(cohen_kappa_score(truth, pred, weights="quadratic"))
    sev = lambda xs: [0 if x < 8 else 1 if x <= 15 else 2 for x in xs]  # noqa: E731
    assert a["qwk_severity"] == pytest.approx(cohen_kappa_score(sev(truth), sev(pred), weights="quadratic"))
    for alpha in range(6):
        ref = sum(abs(int(p) - int(t)) <= alpha for t, p in zip(truth, pred, strict=True)) / len(truth)
        assert a[f"coverage_a{alpha}"] == pytest.approx(ref) == coverage(truth, pred, alpha)
    assert a["mae_ctss"] == pytest.approx(np.mean(np.abs(pred - truth)))
    assert math.isnan(coverage([], [], 1))
    assert math.isnan(agreement([3], [3])["qwk_ctss"])  # one scan: no kappa


def test_fairness_groups_by_sex_then_age_band():
    assert [age_band(a, [40, 50, 60, 70]) for a in (18, 40, 41, 60.5, 70, 71, None)] == \
        ["<=40", "<=40", "41-50", "61-70", "61-70", ">70", None]
    graded = [{"sex": s, "age": a, "truth_ctss": t, "ctss": p} for s, a, t, p in
              [("F", 30, 3, 3), ("F", 35, 10, 12), ("M", 45, 20, 19), ("M", 75, 5, 9), ("M", 46, 0, 0)]]
    rows = {(r["sex"], r["age"]): r for r in fairness(graded, [40, 50, 60, 70], 6)}
    assert len(rows) == 12 and rows[("F", "all")]["n"] == 2 and rows[("M", "41-50")]["n"] == 2
    assert rows[("F", "<=40")]["coverage_a2"] == 1.0 and rows[("M", ">70")]["coverage_a3"] == 0.0
    assert rows[("F", "61-70")]["n"] == 0


# -- the classical steps ------------------------------------------------------------------------------------------
def test_organ_onset_finds_the_enclosed_dome():
    lung = np.zeros((10, 64, 64), bool)
    lung[:, 10:54, 8:30] = True
    lung[:, 10:54, 34:56] = True
    lung[7:, 30:40, 14:24] = False  # a blob enclosed by the right lung from slice 7 (p = 77.8) down
    p = method.percent_labels(lung)
    z, organ = method.organ_onset(lung, p, method.Settings(size=64))
    assert z == 7 and organ.sum() == 100
    lung[7:, 30:40, 14:24] = True
    assert method.organ_onset(lung, p, method.Settings(size=64)) == (None, None)


def test_bright_vessels_are_found_and_opacity_is_not():
    rng = np.random.default_rng(0)
    hu = np.full((3, 96, 96), -850.0) + rng.normal(0, 20, (3, 96, 96))
    lung = np.zeros(hu.shape, bool)
    lung[:, 8:88, 8:88] = True
    yy, xx = np.mgrid[0:96, 0:96]
    tube = (np.abs(yy - 0.5 * xx - 20) < 1.6) & lung[0]
    blob = ((yy - 65) ** 2 + (xx - 60) ** 2 < 12 ** 2)
    hu[:, tube] = 40.0
    hu[:, blob] = -400.0
    s = method.Settings(size=96, vessel_sigmas=(1.0, 1.5, 2.0))
    v = method.vessel_mask(hu, lung, s)
    assert v[1][tube].mean() > 0.9
    inner = blob & (np.hypot(yy - 65, xx - 60) < 9)
    assert v[1][inner].mean() < 0.05  # ground glass is a plateau, not a ridge (vessel_floor_hu)


@pytest.mark.parametrize("scores", [(0, 0, 0, 0, 0), (3, 2, 3, 2, 2)])
def test_phantom_scores_are_recovered_and_the_vessel_control_scores_zero(scores):
    hu, lobes, opacity, planted = ricord.phantom(np.random.default_rng(3), scores, 128, 20, vessels=8)
    s = method.Settings.from_dict({"size": 128, "vessel_sigmas": [1.0, 1.5, 2.0]})
    res = method.segment(hu, lobes, 10.0, s, keep_stages=True)
    g = method.grade(*method.involvement(res.infection, lobes))
    assert g["ctss"] == sum(ricord.score_of(p) for p in planted) == sum(scores)
    assert res.organ["organ_slice"] is not None  # the liver dome was found and its rim removed
    assert not (res.infection & res.stages["vessels"]).any()


@pytest.mark.slow
def test_full_size_512_grid_runs_with_the_authors_pixel_sizes():
    """The paper's setting: slices at 512² with the authors' kernel sizes unscaled and sigmas 1–3 px."""
    hu, lobes, _, planted = ricord.phantom(np.random.default_rng(0), (2, 1, 1, 1, 1), 512, 8)
    s = method.Settings()
    assert s.size == 512 and s.scale == 1.0 and s.px(s.pleura_px) == 3 and s.area(s.big_vessel_px) == 460
    res = method.segment(hu, lobes, 10.0, s)
    assert res.infection.shape == (8, 512, 512) and res.infection.dtype == bool
    g = method.grade(*method.involvement(res.infection, lobes))
    assert g["scores"] == [ricord.score_of(p) for p in planted] == [2, 1, 1, 1, 1]


def test_presets_paper_and_code():
    from medrun.pipelines.covid_severity.config import Method

    paper, code = Method().resolved(), Method(preset="code").resolved()
    assert (paper["hu_min"], paper["hu_max"], paper["hole_px"]) == (-595.0, -1.0, 30)
    assert (code["hu_min"], code["hu_max"], code["hole_px"], code["min_component_px"]) == (-700.0, 30.0, 100, 46)
    assert Method(preset="code", hu_min=-650).resolved()["hu_min"] == -650
    with pytest.raises(ValueError, match="must be below hu_max"):
        Method(hu_min=0, hu_max=-100)


# -- the CLI on the fixture ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_learns_ctss_on_fixture_then_grade_and_reuse(cli, runs):
    """The card's smoke run: segment the 8 graded fixture scans, then eval: |pred − planted CTSS| ≤ 1 on most
    scans, CTSS QWK > 0.6, and the vessels-only control scores 0; grade on the annotations too."""
    seg = cli("segment", "covid-severity", "--dataset", "ricord-1a", "--fixture", "--runs-dir", runs, "--json")
    assert seg.code == 0, seg.err
    out = seg.json()
    assert out["metrics"]["n_cases"] == 8 and out["metrics"]["n_annotated"] == 7
    run = runs / "covid-severity" / f"segment-{out['run_id'][:12]}"
    for f in ("per_case.csv", "paper.md", "metrics.json", "MANIFEST.sha256",
              "masks/MIDRC-RICORD-1A-419639-000082.nii.gz",
              "figures/overlays/MIDRC-RICORD-1A-SITE2-000021.png", "figures/steps/MIDRC-RICORD-1A-419639-000082.png"):
        assert (run / f).exists(), f
    assert len(json.loads((run / "data.lock.json").read_text())["splits"]["cases"]) == 8

    ev = cli("eval", "covid-severity", "--dataset", "ricord-1a", "--fixture", "--runs-dir", runs, "--json")
    assert ev.code == 0, ev.err
    m = ev.json()["metrics"]
    assert m["qwk_ctss"] > 0.6 and m["coverage_a1"] >= 0.75 and m["zero_truth_max_ctss"] == 0, m
    assert m["qwk_severity"] > 0.6 and m["n_cases"] == 8
    assert m["annotations_qwk_ctss"] <= m["qwk_ctss"]  # the rough outlines grade worse, as in Table 1
    ev_run = runs / "covid-severity" / f"eval-{ev.json()['run_id'][:12]}"
    assert json.loads((ev_run / "run.json").read_text())["parent"] == out["run_id"]
    for f in ("fairness.csv", "table1.csv", "per_case.csv", "figures/coverage.png", "figures/ctss_scatter.png",
              "figures/fairness.png", "figures/confusion_severity_pred.png"):
        assert (ev_run / f).exists(), f
    page = (ev_run / "paper.md").read_text()
    assert "Table 1" in page and "Table 2" in page and "not comparable" in page

    gr = cli("grade", "covid-severity", "--dataset", "ricord-1a", "--fixture", "--runs-dir", runs, "--json",
             "-o", "grade.mask_source=annotations")
    assert gr.code == 0, gr.err
    assert gr.json()["metrics"]["mask_source"] == "annotations" and gr.json()["metrics"]["n_cases"] == 8

    again = cli("segment", "covid-severity", "--dataset", "ricord-1a", "--fixture", "--runs-dir", runs, "--json")
    assert again.json()["reused"] and again.json()["run_id"] == out["run_id"]


# -- bad input ----------------------------------------------------------------------------------------------------
@pytest.fixture
def data(tmp_path):
    from medrun.pipelines.runner import fixture_root

    return shutil.copytree(fixture_root("ricord-1a", log=lambda *_: None), tmp_path / "ricord-1a")


def _segment(cli, runs, data, *over):
    return cli("segment", "covid-severity", "--dataset", "ricord-1a", "--data-dir", data, "--runs-dir", runs,
               "-o", "lobes.dir=lobes", "-o", "method.size=128", *sum((["-o", o] for o in over), []))


def _nothing_complete(runs, r):
    assert "Traceback" not in r.err and len([ln for ln in r.err.splitlines() if "error" in ln.lower()]) <= 1, r.err
    assert not list(runs.glob("**/MANIFEST.sha256"))


def _series_dir(data, i):
    case = ricord.fixture_cases()[i]
    return next((data / ricord.DICOM_DIR / case).glob("*/2.000000-*"))


def test_no_lobe_source_names_both_options(cli, runs, data):
    r = cli("segment", "covid-severity", "--dataset", "ricord-1a", "--data-dir", data, "--runs-dir", runs)
    assert r.code == 4 and "lobes.dir" in r.err and "lobes.lungmask_checkpoint" in r.err, r.err
    _nothing_complete(runs, r)


def test_lungmask_checkpoint_without_the_package(cli, runs, data, tmp_path):
    import importlib.util

    if importlib.util.find_spec("lungmask") is not None:
        pytest.skip("lungmask is installed")
    ck = tmp_path / "unet_ltrclobes-3a07043d.pth"
    ck.write_bytes(b"\0")
    r = cli("segment", "covid-severity", "--dataset", "ricord-1a", "--data-dir", data, "--runs-dir", runs,
            "-o", f"lobes.lungmask_checkpoint={ck}")
    assert r.code == 4 and "lungmask package" in r.err and "lobes.dir" in r.err, r.err
    _nothing_complete(runs, r)


def test_series_with_missing_slices_names_its_folder(cli, runs, data):
    series = _series_dir(data, 4)
    (series / "1-10.dcm").unlink()
    r = _segment(cli, runs, data)
    assert r.code == 3 and str(series) in r.err and "missing slices" in r.err, r.err
    _nothing_complete(runs, r)


def test_series_with_mixed_orientations_names_its_folder(cli, runs, data):
    import pydicom

    series = _series_dir(data, 6)
    ds = pydicom.dcmread(series / "1-05.dcm")
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0.9397, -0.342]
    ds.save_as(series / "1-05.dcm")
    r = _segment(cli, runs, data)
    assert r.code == 3 and str(series) in r.err and "mixes slice orientations" in r.err, r.err
    _nothing_complete(runs, r)


def test_grades_sheet_naming_no_case(cli, runs, data):
    sheet = data / "other_grades.csv"
    sheet.write_text("Dataset,Sequence ID,Series ID,Score,Comments\nRICORD 1A,123456,7,4,\nRICORD 1A,123456,8,9,\n")
    r = _segment(cli, runs, data, f"dataset.grades={sheet}")
    assert r.code == 3 and str(sheet) in r.err and "names no case of this download" in r.err, r.err
    _nothing_complete(runs, r)


def test_lobe_map_of_another_grid_names_the_file(cli, runs, data):
    import nibabel as nib

    case = ricord.fixture_cases()[0]
    bad = data / "lobes" / f"{case}.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((64, 64, 20), np.uint8), np.eye(4)), str(bad))
    r = _segment(cli, runs, data, f"dataset.only=[{case}]", "dataset.cases=all")
    assert r.code == 3 and str(bad) in r.err and "but its series is 128×128×20" in r.err, r.err
    _nothing_complete(runs, r)


@pytest.mark.slow
def test_grading_annotations_without_an_export_is_a_usage_error(cli, runs, data):
    cases = ricord.fixture_cases()[:2]
    seg = _segment(cli, runs, data, "dataset.annotations=null", f"dataset.only=[{','.join(cases)}]",
                   "segment.overlays=0")
    assert seg.code == 0, seg.err
    r = cli("grade", "covid-severity", "--dataset", "ricord-1a", "--data-dir", data, "--runs-dir", runs,
            "-o", "lobes.dir=lobes", "-o", "method.size=128", "-o", "dataset.annotations=null",
            "-o", f"dataset.only=[{','.join(cases)}]", "-o", "segment.overlays=0",
            "-o", "grade.mask_source=annotations")
    assert r.code == 2 and "needs a segment run made with an annotation export" in r.err, r.err
    assert len(list(runs.glob("**/MANIFEST.sha256"))) == 1  # the segment run only


# -- lobes from lungmask (the package is optional: a stand-in with its interface checks medrun's side) -----------
FAKE_LUNGMASK = {
    "__init__.py": "",
    "resunet.py": """
import torch


class UNet(torch.nn.Module):  # lungmask's signature; a 1×1 convolution stands in for the U-Net
    def __init__(self, n_classes=2, padding=True, depth=5, up_mode="upsample", batch_norm=True, residual=False):
        super().__init__()
        self.head = torch.nn.Conv2d(1, n_classes, 1)

    def forward(self, x):
        return self.head(x)
""",
    "utils.py": """
import numpy as np


def preprocess(img, resolution=(256, 256)):
    return np.asarray(img, np.float32), [None] * len(img)


def postprocessing(label_image, spare=(), disable_tqdm=False):
    return np.asarray(label_image)


def reshape_mask(mask, box, shape):
    return np.asarray(mask)
""",
}


def test_lungmask_weights_load_safely_and_feed_the_predictor(tmp_path, monkeypatch):
    import torch
    from safetensors.torch import save_file

    from medrun.pipelines import get
    from medrun.pipelines.covid_severity import lobes
    from medrun.pipelines.predictor import Predictor
    from medrun.pipelines.runner import Request, load_manifest

    pkg = tmp_path / "site" / "lungmask"
    pkg.mkdir(parents=True)
    for name, text in FAKE_LUNGMASK.items():
        (pkg / name).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for mod in [name for name in list(sys.modules) if name.startswith("lungmask")]:
        monkeypatch.delitem(sys.modules, mod)

    # "lobes": label 1 where the input is bright (x > 0.5 after lungmask's scaling), else 0; "fill": lungs everywhere
    lobe_w = {"head.weight": torch.zeros(6, 1, 1, 1), "head.bias": torch.zeros(6)}
    lobe_w["head.weight"][1, 0] = 10.0
    lobe_w["head.bias"][1] = -5.0
    fill_w = {"head.weight": torch.zeros(3, 1, 1, 1), "head.bias": torch.tensor([0.0, 1.0, 0.0])}
    save_file(lobe_w, str(tmp_path / "ltrclobes.safetensors"))
    torch.save(fill_w, tmp_path / "r231.pth")  # a plain state dict, read with torch.load(weights_only=True)
    over = ["lobes.dir=null", f"lobes.lungmask_checkpoint={tmp_path / 'ltrclobes.safetensors'}",
            f"lobes.lungmask_fill_checkpoint={tmp_path / 'r231.pth'}"]
    m, _ = load_manifest(Request(pipeline="covid-severity", stage="segment", dataset="ricord-1a", fixture=True,
                                 overrides=over), get("covid-severity"))
    nets = lobes.networks(m)
    assert set(nets) == {"lobes", "fill"} and nets["fill"] is not None
    hu = np.full((2, 8, 8), -1000.0, np.float32)
    hu[:, :, 4:] = 500.0  # (500 + 1024) / 1624 > 0.5
    out = lobes.lungmask_lobes(hu, {"lobes": nets["lobes"]}, Predictor.from_manifest(m), batch_size=1)
    assert out.dtype == np.uint8 and (out[:, :, 4:] == 1).all() and (out[:, :, :4] == 0).all()
    fused = lobes.lungmask_lobes(hu, nets, Predictor.from_manifest(m))
    assert (fused[:, :, 4:] == 1).all() and (fused[:, :, :4] == 2).all()  # unlabelled lung → the spare label

    torch.save({"head": {"weight": 1}}, tmp_path / "pickle.pth")  # not a mapping of tensors: refused
    pickled = {"lungmask_checkpoint": str(tmp_path / "pickle.pth"), "lungmask_fill_checkpoint": None}
    bad = m.model_copy(update={"lobes": m.lobes.model_copy(update=pickled)})
    from medrun.errors import UsageError

    with pytest.raises(UsageError, match="pickle.pth: key 'head' holds a Python dict, not a tensor"):
        lobes.networks(bad)
