"""The microscopy fixture is in the nnU-Net v2 raw layout; the reader pairs images with labels and rejects bad
labels; the importer writes plain pairs in that layout; the fixture's morphology counts are exact."""

import json

import numpy as np
import pytest
from PIL import Image

from medrun.datasets import get, nnunet_raw
from medrun.errors import DataError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return get("sekh-mito").make_fixture(tmp_path_factory.mktemp("fx"), 0)


@pytest.fixture
def copy(root, tmp_path):
    import shutil

    return shutil.copytree(root, tmp_path / root.name)


def test_layout_and_reader(root):
    assert root.name == "Dataset001_Fixture"
    meta = json.loads((root / "dataset.json").read_text())
    assert meta == {"channel_names": {"0": "fluorescence"}, "labels": {"background": 0, "organelle": 1},
                    "numTraining": 24, "file_ending": ".png"}
    assert len(list((root / "imagesTr").glob("*_0000.png"))) == 24 and len(list((root / "labelsTs").glob("*.png"))) == 8
    cases, _ = nnunet_raw.read(root)
    assert [c.split for c in cases].count("Tr") == 24 and [c.split for c in cases].count("Ts") == 8
    assert cases[0].id == "fixture_tr_000" and cases[0].label.name == "fixture_tr_000.png"
    image, label = nnunet_raw.load(cases[0], meta["labels"])
    assert image.shape == label.shape == (64, 64) and set(np.unique(label)) <= {0, 1}
    assert image[label == 1].mean() > image[label == 0].mean() + 20  # bright organelles on a dim background
    assert 0.1 < np.mean([nnunet_raw.load(c)[1].mean() for c in cases]) < 0.35


def test_fixture_morphology_counts_are_exact(root):
    """Each drawn object is one 8-connected component in its class's area bin."""
    from skimage.measure import label, regionprops

    truth = json.loads((root / "fixture_truth.json").read_text())
    for case in nnunet_raw.read(root)[0]:
        _, lab = nnunet_raw.load(case)
        got = {"dot": 0, "rod": 0, "network": 0}
        for p in regionprops(label(lab, connectivity=2)):
            got[nnunet_raw.morph_class(int(p.area))] += 1
        assert got == truth["cases"][case.id]
    assert truth["totalTs"] == {"dot": 32, "rod": 21, "network": 3}  # the smoke manifest's thresholds
    assert all(v > 0 for v in truth["totalTr"].values())


def test_morph_bins():
    assert [nnunet_raw.morph_class(a) for a in (1, 99, 100, 500, 501)] == ["dot", "dot", "rod", "network", "network"]


def test_wrong_root_suggests_inner_folder(root):
    with pytest.raises(DataError, match="use .*Dataset001_Fixture instead"):
        nnunet_raw.check_layout(root.parent)


def test_label_of_other_shape_names_the_file(copy):
    case = nnunet_raw.read(copy)[0][3]
    Image.fromarray(np.zeros((32, 48), np.uint8)).save(case.label)
    with pytest.raises(DataError, match=rf"{case.label.name} is 48×32 but its image .* is 64×64"):
        nnunet_raw.load(case)


def test_label_values_outside_dataset_json(copy):
    case = nnunet_raw.read(copy)[0][0]
    Image.fromarray(np.full((64, 64), 255, np.uint8)).save(case.label)
    with pytest.raises(DataError, match="values 255 outside dataset.json's labels .*import-pairs"):
        nnunet_raw.load(case, {"background": 0, "organelle": 1})
    Image.fromarray(np.full((64, 64), 2, np.uint8)).save(case.label)
    with pytest.raises(DataError, match="values 2 outside"):
        nnunet_raw.load(case, {"background": 0, "organelle": 1})


def test_missing_label_and_orphan_label(copy):
    lab = copy / "labelsTr" / "fixture_tr_002.png"
    lab.rename(copy / "orphan.png")
    with pytest.raises(DataError, match="label missing for .*fixture_tr_002_0000.png"):
        nnunet_raw.read(copy)
    (copy / "orphan.png").rename(copy / "labelsTr" / "stray.png")
    (copy / "imagesTr" / "fixture_tr_002_0000.png").unlink()
    with pytest.raises(DataError, match="stray.png has no image"):
        nnunet_raw.read(copy)


def test_import_pairs_maps_255_to_1(tmp_path):
    for d in ("images", "masks"):
        (tmp_path / d).mkdir()
    for i in range(3):
        Image.fromarray(np.full((16, 16), 40 * i, np.uint8)).save(tmp_path / "images" / f"c{i}.png")
        m = np.zeros((16, 16), np.uint8)
        m[4:9, 4:9] = 255
        Image.fromarray(m).save(tmp_path / "masks" / f"c{i}.png")
    out = nnunet_raw.import_pairs(tmp_path / "images", tmp_path / "masks", tmp_path / "raw", "Dataset501_SekhMito")
    cases, meta = nnunet_raw.read(out)
    assert len(cases) == 3 and meta["numTraining"] == 3
    _, lab = nnunet_raw.load(cases[0], meta["labels"])
    assert lab.sum() == 25 and lab.max() == 1
    assert (
        nnunet_raw._main(["import-pairs", str(tmp_path / "images"), str(tmp_path / "nowhere"), str(tmp_path / "x")])
        == 3
    )


def test_16_bit_and_float_planes_keep_their_stored_values(copy):
    """A lab's 16-bit PNG and float TIFF planes are read as stored (through datasets.imageio), never cut to 8 bits."""
    import tifffile

    cases, meta = nnunet_raw.read(copy)
    wide = (np.arange(64 * 64).reshape(64, 64) * 15).astype(np.uint16)  # up to 61,425
    Image.fromarray(wide).save(cases[0].image)
    image, _ = nnunet_raw.load(cases[0], meta["labels"])
    assert image.dtype == np.float32 and np.array_equal(image, wide.astype(np.float32))
    tif = cases[1].image.with_suffix(".tif")
    tifffile.imwrite(tif, np.linspace(-2, 7, 64 * 64, dtype=np.float32).reshape(64, 64))
    image, _ = nnunet_raw.load(nnunet_raw.Case(cases[1].id, tif, cases[1].label, "Tr"), meta["labels"])
    assert image.min() == pytest.approx(-2) and image.max() == pytest.approx(7)
