"""The UDIAT fixture is in the Dataset B layout (original/, GT/, DatasetB.xlsx); labels come from the sheet, which
may also be a CSV; bad sheets and unlisted images are named."""

import numpy as np
import pandas as pd
import pytest

from medrun.datasets import get, udiat
from medrun.errors import DataError


@pytest.fixture
def root(tmp_path):
    return get("udiat").make_fixture(tmp_path, 0)


def test_layout_and_labels_from_the_sheet(root):
    assert root.name == "BUS_Dataset_B" and (root / "DatasetB.xlsx").is_file()
    cases = udiat.read(root)
    sheet = pd.read_excel(root / "DatasetB.xlsx")
    assert len(cases) == len(sheet) == 24 and sum(c.label for c in cases) == 12
    for c, (ident, kind) in zip(cases, zip(sheet["Image"], sheet["Type"], strict=True), strict=True):
        assert int(c.id) == ident and c.label == (kind == "Malignant")  # ids stored as numbers match 000001.png
    image, mask = udiat.load(cases[0])
    assert image.shape == mask.shape == (64, 64) and mask.any()


def test_csv_sheet_is_accepted(root):
    df = pd.read_excel(root / "DatasetB.xlsx")
    (root / "DatasetB.xlsx").unlink()
    df.rename(columns={"Image": "image_id", "Type": "class"}).to_csv(root / "DatasetB.csv", index=False)
    assert [c.label for c in udiat.read(root)] == [int(t == "Malignant") for t in df["Type"]]


def test_bad_sheets_and_unlisted_images(root):
    df = pd.read_excel(root / "DatasetB.xlsx")
    df.iloc[:-1].to_excel(root / "DatasetB.xlsx", index=False)
    with pytest.raises(DataError, match="000024.png is not listed in .*DatasetB.xlsx"):
        udiat.read(root)
    df.loc[3, "Type"] = "Unknown"
    df.to_excel(root / "DatasetB.xlsx", index=False)
    with pytest.raises(DataError, match="row 5: type 'Unknown'"):
        udiat.read(root)
    (root / "DatasetB.xlsx").unlink()
    with pytest.raises(DataError, match="expected DatasetB.xlsx or DatasetB.csv"):
        udiat.read(root)


def test_missing_mask_and_wrong_root(root):
    with pytest.raises(DataError, match="use .*BUS_Dataset_B instead"):
        udiat.read(root.parent)
    (root / "GT" / "000003.png").unlink()
    with pytest.raises(DataError, match="mask missing for .*000003.png"):
        udiat.read(root)
    assert np.all(True)
