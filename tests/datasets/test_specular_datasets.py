"""datasets.specular: the fixtures write the public layouts (frames + masks paired by stem; Hyper-Kvasir's BBPS-2-3
AVIs that OpenCV decodes, with a homography sidecar), and the readers name the file and the fix on bad input."""

import numpy as np
import pytest

from medrun.datasets import specular as data
from medrun.errors import DataError


def test_clinicspec_fixture_layout_and_signal(tmp_path):
    root = data.fixture_clinicspec(tmp_path / "cvc", 0)
    frames = data.read_frames(root / "images", root / "masks")
    assert [f.stem for f in frames] == [f"{i:03d}" for i in range(1, 11)]
    rgb = data.load_rgb(frames[0].image)
    gt = data.load_mask(frames[0].mask, rgb.shape[:2])
    assert rgb.shape == (288, 384, 3) and rgb.dtype == np.uint8 and 0 < gt.mean() < 0.05
    assert rgb[gt].mean() > 200 > rgb[~gt].mean()  # spots are bright, the rest is not
    assert sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) < 5e6


def test_kvasir_fixture_videos_decode_with_their_homographies(tmp_path):
    root = data.fixture_kvasir(tmp_path / "hk", 0)
    vids = data.read_videos(root / data.KVASIR_SUBDIR)
    assert len(vids) == 2 and all(v.suffix == ".avi" for v in vids)
    frames, n, fps = data.read_video(vids[0], lambda i: i in (0, 25))
    assert n == 60 and fps == pytest.approx(25) and set(frames) == {0, 25} and frames[0].shape == (288, 384, 3)
    hs = data.homographies(vids[0])
    assert len(hs) == 60 and hs[0].shape == (3, 3)


def test_readers_name_the_file_and_the_fix(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match="no frames in"):
        data.read_frames(tmp_path / "images", tmp_path / "masks")
    from PIL import Image

    Image.new("RGB", (8, 6)).save(tmp_path / "images" / "a.png")
    Image.new("L", (8, 6)).save(tmp_path / "masks" / "b.png")
    with pytest.raises(DataError, match="a.png has no mask"):
        data.read_frames(tmp_path / "images", tmp_path / "masks")
    Image.new("L", (4, 4)).save(tmp_path / "masks" / "a.png")
    with pytest.raises(DataError, match="4×4, its frame 8×6"):
        data.load_mask(tmp_path / "masks" / "a.png", (6, 8))
    bad = tmp_path / "v.avi"
    bad.write_bytes(b"not a video")
    with pytest.raises(DataError, match="OpenCV cannot"):
        data.read_video(bad)
    with pytest.raises(DataError, match="video folder not found"):
        data.read_videos(tmp_path / "nope")
