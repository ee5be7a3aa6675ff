"""Hamlyn and SCARED (endo-depth): the fixtures are in the public layouts, the right view is the left one shifted by
the true disparity, and bad layouts / depth files are DataErrors naming the file."""

import numpy as np
import pytest
from PIL import Image

from medrun.datasets import get, hamlyn, scared
from medrun.errors import DataError


@pytest.fixture(scope="module")
def ham(tmp_path_factory):
    return hamlyn.fixture(tmp_path_factory.mktemp("ham"), 0, n_videos=2, frames=3)


def test_hamlyn_fixture_layout_and_reader(ham):
    assert sorted(p.name for p in (ham / "rectified01").iterdir()) == ["depth01", "image01", "image02"]
    assert (ham / "rectified02" / "image01" / "0000000003.jpg").is_file()
    with Image.open(ham / "rectified01" / "depth01" / "0000000001.png") as im:
        assert im.mode.startswith("I;16") and im.size == (128, 96)
    frames = hamlyn.read(ham)
    assert len(frames) == 6 and [f.video for f in frames] == ["01"] * 3 + ["02"] * 3
    assert [f.video for f in hamlyn.read(ham, ["2"])] == ["02"] * 3
    left, right, depth = hamlyn.load(frames[0])
    assert left.shape == right.shape == (96, 128, 3) and depth.dtype == np.float32
    valid = depth > 0
    assert 0.9 < valid.mean() < 1 and 39 <= depth[valid].min() and depth[valid].max() <= 121
    for f in frames:
        hamlyn.check_header(f)


def test_right_view_is_the_left_shifted_by_the_disparity():
    rng = np.random.default_rng(3)
    left, right, depth = hamlyn.stereo_scene(rng, 96, 128)
    disp = 100 * 5 / depth
    ys, xs = np.mgrid[10:86, 30:118]
    from scipy import ndimage

    warped = np.stack([ndimage.map_coordinates(right[..., c].astype(float), [ys, xs - disp[ys, xs]], order=1)
                       for c in range(3)], -1)
    unwarped = right[ys, xs].astype(float)
    target = left[ys, xs].astype(float)
    assert np.abs(warped - target).mean() < 0.25 * np.abs(unwarped - target).mean()
    # the monocular cue: brighter where nearer (camera light)
    assert np.corrcoef(left.mean(-1).ravel(), depth.ravel())[0, 1] < -0.5


def test_hamlyn_bad_layouts(tmp_path, ham):
    with pytest.raises(DataError, match="not found"):
        hamlyn.read(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no rectifiedNN"):
        hamlyn.read(tmp_path / "empty")
    with pytest.raises(DataError, match="one level above"):
        hamlyn.read(ham.parent)
    with pytest.raises(DataError, match="no rectified07"):
        hamlyn.read(ham, ["07"])


def test_hamlyn_missing_right_and_bad_depth(tmp_path):
    root = hamlyn.fixture(tmp_path / "h", 0, n_videos=1, frames=2)
    (root / "rectified01" / "image02" / "0000000002.jpg").unlink()
    with pytest.raises(DataError, match=r"right frame missing for .*0000000002.jpg"):
        hamlyn.read(root)
    root = hamlyn.fixture(tmp_path / "g", 0, n_videos=1, frames=1)
    depth = root / "rectified01" / "depth01" / "0000000001.png"
    arr = np.asarray(Image.open(depth))
    Image.fromarray((arr // 2).astype(np.uint8)).save(depth)
    frame = hamlyn.read(root)[0]
    for check in (hamlyn.check_header, hamlyn.load):
        with pytest.raises(DataError, match=r"0000000001.png is L \(8-bit\)"):
            check(frame)
    Image.fromarray(arr[:80]).save(depth)
    with pytest.raises(DataError, match="is 128×80 but its image"):
        hamlyn.check_header(frame)


def test_scared_fixture_layout_and_reader(tmp_path):
    root = get("scared").make_fixture(tmp_path, 0)
    kf = root / "dataset_2" / "keyframe_1"
    assert (kf / "image_02" / "data" / "0000000000.png").is_file()
    assert (kf / "image_03" / "data" / "0000000005.png").is_file()
    assert (kf / "data" / "scene_points" / "scene_points000005.tiff").is_file()
    frames = scared.read(root, [2, 3])
    assert len(frames) == 12 and {f.subject for f in frames} == {2, 3} and frames[0].video == "d2k1"
    left, _, depth = hamlyn.load(frames[0])
    assert left.shape == (96, 128, 3) and 39 < depth[depth > 0].min() and depth.max() < 121
    hamlyn.check_header(frames[0])
    (kf / "data" / "scene_points" / "scene_points000001.tiff").unlink()
    with pytest.raises(DataError, match=r"ground truth missing for .*0000000001.png"):
        scared.read(root)
    with pytest.raises(DataError, match="no dataset_9"):
        scared.read(root, [9])


def test_header_check_reads_float_point_tiffs_and_rejects_broken_ones(tmp_path):
    """SCARED's scene_points are 3-channel float32 TIFFs, which PIL cannot open: the shared header check falls back
    to tifffile for them (and still fails a truncated one)."""
    from medrun.datasets import check_image_headers

    root = scared.fixture(tmp_path / "s", 0, n_subjects=1, frames=2)
    tiffs = sorted(root.rglob("*.tiff"))
    assert check_image_headers(tiffs) == 2
    tiffs[0].write_bytes(tiffs[0].read_bytes()[:200])
    with pytest.raises(DataError, match="scene_points000000.tiff"):
        check_image_headers(tiffs)
