"""The header check before training (issue 14, item 8): every image format the readers use, good and damaged,
and the once-per-fingerprint marker."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medrun.datasets import _headers, check_headers_once, check_image_headers
from medrun.errors import DataError

VOL = (np.arange(24 * 20 * 16) % 977).astype(np.int16).reshape(24, 20, 16)


def _write(tmp_path: Path, suffix: str) -> Path:
    rng = np.random.default_rng(0)
    if suffix in (".nii", ".nii.gz"):
        path = tmp_path / f"v{suffix}"
        nib.save(nib.Nifti1Image(VOL, np.eye(4)), path)
    elif suffix == ".hdr":
        path = tmp_path / "v.hdr"
        nib.save(nib.Nifti1Pair(VOL, np.eye(4)), path)
    else:
        path = tmp_path / f"a{suffix}"
        Image.fromarray((rng.random((96, 96)) * 255).astype(np.uint8)).save(path)
    return path


def _cut(path: Path) -> Path:
    target = path.with_suffix(".img") if path.suffix == ".hdr" else path
    data = target.read_bytes()
    target.write_bytes(data[: int(len(data) * 0.6)])
    return path


SUFFIXES = [".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".nii", ".nii.gz", ".hdr"]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_good_files_pass_and_cut_files_are_named(tmp_path, suffix):
    good = _write(tmp_path, suffix)
    assert check_image_headers([good]) == 1
    bad = _cut(good)
    with pytest.raises(DataError, match=rf"corrupt or unreadable image {bad}") as e:
        check_image_headers([bad])
    assert e.value.exit_code == 3


def test_garbage_is_named_with_the_count_of_others(tmp_path):
    files = []
    for i in range(3):
        files.append(tmp_path / f"x{i}.png")
        files[-1].write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"x0.png.*and 2 more"):
        check_image_headers(files)


def test_nii_gz_trailer_spares_a_full_read(tmp_path, monkeypatch):
    path = _write(tmp_path, ".nii.gz")
    monkeypatch.setattr(nib.Nifti1Image, "get_fdata", lambda *a, **k: pytest.fail("read the whole volume"))
    assert check_image_headers([path]) == 1


def test_multi_member_gzip_is_read_fully_not_refused(tmp_path):
    one = _write(tmp_path, ".nii.gz")
    raw = gzip.decompress(one.read_bytes())
    two = tmp_path / "two.nii.gz"
    two.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))  # legal: the trailer covers member 2
    assert check_image_headers([two]) == 1


def test_lone_img_or_hdr_is_not_judged(tmp_path):
    (tmp_path / "disk.img").write_bytes(b"\x00" * 10)
    (tmp_path / "envi.hdr").write_text("ENVI\n")
    assert check_image_headers([tmp_path / "disk.img", tmp_path / "envi.hdr"]) == 2


def _fps(root: Path) -> dict:
    return {"data": {"root": str(root), "files": {p.name: [p.stat().st_size, "x"] for p in root.iterdir()}}}


def test_checked_once_per_fingerprint(tmp_path, monkeypatch):
    root = tmp_path / "d"
    root.mkdir()
    _write(root, ".png")
    (root / "notes.txt").write_text("not an image: not checked")
    marker = tmp_path / "cache" / "header-checks" / "abc.ok"
    assert check_headers_once(_fps(root), marker) == 1 and marker.is_file()
    monkeypatch.setattr(_headers, "_problem", lambda p: pytest.fail("checked again"))
    assert check_headers_once(_fps(root), marker) == 0
    assert not [p for p in marker.parent.iterdir() if p.name.startswith(".")]  # no temp file left


def test_no_marker_after_a_failure_and_unwritable_cache_is_harmless(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    (root / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    marker = tmp_path / "cache" / "bad.ok"
    with pytest.raises(DataError, match="bad.jpg"):
        check_headers_once(_fps(root), marker)
    assert not marker.exists()
    (root / "bad.jpg").unlink()
    _write(root, ".png")
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    assert check_headers_once(_fps(root), blocker / "x.ok") == 1
