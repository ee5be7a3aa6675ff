"""MIDRC-RICORD-1a: the fixture is the NBIA layout, and the reader finds the series, reads HU with each slice's
slope and intercept, matches the grades and clinical sheets, rasterises the MD.ai polygons, and refuses bad series
(missing slices, mixed orientations, repeated positions) with the series folder named."""

from pathlib import Path

import numpy as np
import pytest

from medrun.datasets import ricord
from medrun.errors import DataError


@pytest.fixture(scope="module")
def root():
    from medrun.pipelines.runner import fixture_root

    return fixture_root("ricord-1a", log=lambda *_: None)  # shared with the pipeline's tests (one per session)


@pytest.fixture(scope="module")
def found(root):
    return ricord.scan(ricord.check_layout(root))


def test_layout_is_nbia_with_sheets_and_lobes(root):
    assert root.name == "ricord-1a"
    for name in (ricord.GRADES, ricord.CLINICAL, ricord.ANNOTATIONS, "metadata.csv"):
        assert (root / name).is_file(), name
    cases = sorted(p.name for p in (root / ricord.DICOM_DIR).iterdir())
    assert cases == sorted(ricord.fixture_cases()) and len(cases) == 9
    series = sorted((root / ricord.DICOM_DIR).glob("*/*/2.000000-ROUTINE CHEST NON-CON-*"))
    assert len(series) == 9 and all(len(list(s.glob("1-*.dcm"))) == 20 for s in series)
    assert sorted(p.name for p in (root / "lobes").iterdir()) == sorted(f"{c}.nii.gz" for c in cases)
    assert sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) < 8e6


def test_scan_finds_every_series_and_skips_scout_and_reformat(found):
    assert len(found) == 9
    distractors = found["MIDRC-RICORD-1A-419639-000361"]
    assert len(distractors) == 3  # the axial series, a scout and a coronal reformat
    chosen = ricord.choose_series("MIDRC-RICORD-1A-419639-000361", distractors)
    assert chosen.description == "ROUTINE CHEST NON-CON" and len(chosen.slices) == 20
    assert [s.usable() for s in sorted(distractors, key=lambda s: s.description)] == [False, True, False]
    with pytest.raises(DataError, match="has no series 'nope'"):
        ricord.choose_series("x", distractors, named="nope")


def test_volume_is_hu_apex_first_whatever_the_encoding(found):
    """uint16 with slope 0.5 / intercept −1024, int16 with slope 1, RLE-compressed slices and files numbered
    bottom-up all read as the same HU scale, ordered apex first."""
    cases = ricord.fixture_cases()
    vols = {i: ricord.read_volume(ricord.choose_series(cases[i], found[cases[i]])) for i in (1, 2, 3, 5)}
    for i, v in vols.items():
        assert v.hu.shape == (20, 128, 128) and v.spacing == pytest.approx((10.0, 2.8, 2.8)), i
        assert -1100 < float(np.median(v.hu[:, :4, :4])) < -900, i  # air in a corner
        lung = v.hu[10, 64, 38 - 10:38 + 10]
        assert -950 < float(np.median(lung)) < -300, i  # lung or opacity, never the raw stored values
    files = vols[2].slice_files  # numbered bottom-up: positions still decide the order
    assert files[0].name == "1-20.dcm" and files[-1].name == "1-01.dcm"


def test_grades_match_cases_by_site_and_number(root, found):
    grades = ricord.read_grades(root / ricord.GRADES)
    matched, unmatched = ricord.match_grades(grades, found, root / ricord.GRADES)
    assert not unmatched and len(matched) == 9
    assert matched["MIDRC-RICORD-1A-SITE2-000004"].score is not None  # 'IA SITE 2' ↔ SITE2
    excluded = [c for c, g in matched.items() if g.score is None]
    assert excluded == ["MIDRC-RICORD-1A-440808-000003"] and "scars" in matched[excluded[0]].comment
    scores = sorted(g.score for g in matched.values() if g.score is not None)
    assert scores[0] == 0 and len(scores) == 8


def test_grades_naming_no_case_is_a_data_error(tmp_path, found):
    sheet = tmp_path / "COVID_grade.csv"
    sheet.write_text("Dataset,Sequence ID,Series ID,Score,Comments\nRICORD 1A,999999,1,4,\nRICORD 1A,888888,2,7,\n")
    with pytest.raises(DataError, match=r"COVID_grade.csv names no case of this download \(999999/1"):
        ricord.match_grades(ricord.read_grades(sheet), found, sheet)
    sheet.write_text("Dataset,Sequence ID,Series ID,Score\nRICORD 1A,419639,82,31\n")
    with pytest.raises(DataError, match="score 31 is outside 0–25"):
        ricord.read_grades(sheet)


def test_clinical_sheet_and_dicom_fallback(root, found):
    rows = ricord.read_clinical(root / ricord.CLINICAL)
    case = "MIDRC-RICORD-1A-660042-000018"
    s = ricord.choose_series(case, found[case])
    info = ricord.match_clinical(rows, s)
    assert info == {"age": 55.0, "sex": "F", "source": "clinical"}
    assert ricord.match_clinical([], s) == {"age": 55.0, "sex": "F", "source": "dicom"}


def test_annotations_rasterise_on_their_series(root, found):
    ann = ricord.read_annotations(root / ricord.ANNOTATIONS)
    case = ricord.fixture_cases()[7]  # the most involved case
    s = ricord.choose_series(case, found[case])
    assert s.uid in ann.series()
    vol = ricord.read_volume(s)
    mask = ricord.rasterise(ann.polygons[s.uid], vol.sops, vol.hu.shape[1:])
    assert mask.shape == vol.hu.shape and mask.any()
    assert float(np.median(vol.hu[mask])) > -700  # the rough outlines hold the opacity (−400 HU)
    control = ricord.fixture_cases()[0]
    assert ricord.choose_series(control, found[control]).uid not in ann.series()  # nothing to outline
    with pytest.raises(DataError, match="has none of the labels"):
        ricord.read_annotations(root / ricord.ANNOTATIONS, ["Lung nodule"])


def test_lobes_fit_their_series(root, found, tmp_path):
    import nibabel as nib

    case = ricord.fixture_cases()[4]
    vol = ricord.read_volume(ricord.choose_series(case, found[case]))
    lobes = ricord.read_lobes(root / "lobes" / f"{case}.nii.gz", vol)
    assert lobes.shape == vol.hu.shape and set(np.unique(lobes)) == {0, 1, 2, 3, 4, 5}
    assert float(np.median(vol.hu[lobes == 0][:1000])) > -1100
    bad = tmp_path / "bad.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((64, 64, 20), np.uint8), np.eye(4)), str(bad))
    with pytest.raises(DataError, match="bad.nii.gz is 64×64×20 but its series is 128×128×20"):
        ricord.read_lobes(bad, vol)
    nib.save(nib.Nifti1Image(np.full((128, 128, 20), 7, np.uint8), vol.affine()), str(bad))
    with pytest.raises(DataError, match="values other than 0–5"):
        ricord.read_lobes(bad, vol)


def _series(positions, orientations=None):
    o = orientations or [(1, 0, 0, 0, 1, 0)] * len(positions)
    return ricord.Series("c", "1.2", "1.3", "CT", "d", "ORIGINAL", [
        ricord.Slice(Path(f"/data/c/s/1-{i:02d}.dcm"), f"sop{i}", (0.0, 0.0, z), tuple(map(float, oi)), (8, 8),
                     (1.0, 1.0))
        for i, (z, oi) in enumerate(zip(positions, o, strict=True))])


def test_ordered_checks_gaps_duplicates_and_orientation():
    slices, step = ricord.ordered(_series([0.0, 5.0, 10.0, 15.0]))
    assert step == 5.0 and [s.position[2] for s in slices] == [15.0, 10.0, 5.0, 0.0]  # apex (highest z) first
    with pytest.raises(DataError, match=r"series /data/c/s is missing slices: a gap of 10.00 mm .*about 1 slice"):
        ricord.ordered(_series([0.0, 5.0, 15.0, 20.0, 25.0]))
    with pytest.raises(DataError, match="two slices at the same position"):
        ricord.ordered(_series([0.0, 5.0, 5.0, 10.0]))
    with pytest.raises(DataError, match="series /data/c/s mixes slice orientations"):
        ricord.ordered(_series([0.0, 5.0, 10.0], [(1, 0, 0, 0, 1, 0)] * 2 + [(1, 0, 0, 0, 0, -1)]))


def test_wrong_folders_are_explained(root, tmp_path):
    with pytest.raises(DataError, match="is the MIDRC-RICORD-1A folder itself"):
        ricord.check_layout(root / ricord.DICOM_DIR)
    with pytest.raises(DataError, match="one level above the download folder"):
        ricord.check_layout(root.parent)
    with pytest.raises(DataError, match="not found.*--fixture"):
        ricord.check_layout(tmp_path / "nothing")
    assert ricord.site_key("IA SITE 2") == ricord.site_key("SITE2") == "S2" and ricord.site_key(419639.0) == "419639"
    assert ricord.case_key("MIDRC-RICORD-1A-419639-000082") == ("419639", 82)
