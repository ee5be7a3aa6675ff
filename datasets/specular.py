"""Colonoscopy frames for specular-highlight detection and video pairs for feature matching (specular card).

Two public sources, one module:

**cvc-clinicspec** (Sánchez et al. 2017): frames with pixel-wise specular-highlight masks built on CVC-ClinicDB
(384×288). CVC hands it out on request with no fixed folder convention, so medrun reads::

    <root>/images/<stem>.(png|tif|tiff|bmp|jpg)     RGB frames (8-bit; 16-bit brought to 8 by images.to_8bit)
    <root>/masks/<stem>.(png|tif|tiff|bmp|jpg)      ground truth, mask > 0 = specular

The two folder names are manifest keys (``dataset.images``, ``dataset.masks``; relative to the root or absolute).
Files pair by stem; an image without a mask, a mask without an image, or a mask of another size is a DataError
naming the file.

**hyper-kvasir** (Borgli et al. 2020), its labeled videos::

    <root>/labeled-videos/lower-gi-tract/quality-of-mucosal-views/BBPS-2-3/*.avi

read with OpenCV (``cv2.VideoCapture``). A video OpenCV cannot open or decode is a DataError naming it. A sidecar
``<stem>.json`` beside a video (fixture only) holds the true plane-to-frame homography of every frame, so matching
can be checked against the truth.

Fixtures: 10 frames of 384×288 (reddish smoothed-noise mucosa, dark thin vessels, 10–30 small saturated spots with a
soft halo, 1–2 large whitish low-saturation patches holding a few spots; GT = the spots with their halo down
to 20 % coverage) and two 60-frame MJPG AVIs at 25 fps (a textured plane under a slowly varying homography plus
independently moving highlights).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo

DATASETS = [
    DatasetInfo("cvc-clinicspec", "CVC-ClinicSpec colonoscopy frames with specular-highlight masks",
                "images/<stem>.(png|tif|bmp|jpg) + masks/<stem>.(png|tif|bmp|jpg) (mask > 0 = specular)",
                "CVC-ClinicSpec (Sánchez et al. 2017), on request from the Computer Vision Center (CVC, Barcelona); "
                "put the frames in images/ and the masks in masks/ (or set dataset.images / dataset.masks)",
                "medrun.datasets.specular:fixture_clinicspec", ("segmentation", "endoscopy")),
    DatasetInfo("hyper-kvasir", "Hyper-Kvasir labeled colonoscopy videos (BBPS-2-3 pairs for feature matching)",
                "labeled-videos/lower-gi-tract/quality-of-mucosal-views/BBPS-2-3/*.avi",
                "Hyper-Kvasir (Borgli et al. 2020), the labeled-videos archive from the Simula datasets site; "
                "pass the unpacked folder holding labeled-videos/ as --data-dir",
                "medrun.datasets.specular:fixture_kvasir", ("video", "endoscopy")),
]

KVASIR_SUBDIR = "labeled-videos/lower-gi-tract/quality-of-mucosal-views/BBPS-2-3"
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg")
VIDEO_SUFFIXES = (".avi", ".mp4", ".mov", ".mkv")


@dataclass
class Frame:
    stem: str
    image: Path
    mask: Path | None


def _files(folder: Path, suffixes) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir())
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes}


def read_frames(images: Path, masks: Path | None = None) -> list[Frame]:
    """Frames of ``images`` paired by stem with ``masks`` (None: no ground truth). Cheap: no file is opened."""
    images = Path(images)
    if not images.is_dir():
        raise DataError(f"image folder not found: {images}",
                        fix="point --data-dir at the folder holding images/ and masks/ (or set dataset.images)")
    imgs = _files(images, IMAGE_SUFFIXES)
    if not imgs:
        raise DataError(f"no frames in {images} (looked for {', '.join(IMAGE_SUFFIXES)})",
                        fix="put the CVC-ClinicSpec frames there, or try --fixture")
    if masks is None:
        return [Frame(s, p, None) for s, p in imgs.items()]
    masks = Path(masks)
    if not masks.is_dir():
        raise DataError(f"mask folder not found: {masks}",
                        fix="put the ground-truth masks in masks/ beside images/ (or set dataset.masks)")
    ms = _files(masks, IMAGE_SUFFIXES)
    for s, p in imgs.items():
        if s not in ms:
            raise DataError(f"{p} has no mask in {masks} (pairs by file stem)",
                            fix=f"add {masks}/{s}.png, or remove the frame")
    for s, p in ms.items():
        if s not in imgs:
            raise DataError(f"mask {p} has no frame in {images} (pairs by file stem)",
                            fix="rename it to its frame's stem, or remove it")
    return [Frame(s, p, ms[s]) for s, p in imgs.items()]


def load_rgb(path: Path):
    """An 8-bit RGB array (H, W, 3); 16-bit frames by their bit depth (``images.to_8bit``)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from .images import to_8bit

    try:
        with Image.open(path) as im:
            im = to_8bit(im) if im.mode in ("I;16", "I", "F") else im
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"cannot read image {path}: {e}", fix="replace the file with a readable PNG/TIF/BMP/JPG") from e


def load_mask(path: Path, shape: tuple[int, int]):
    """A boolean mask (mask > 0); DataError when its size differs from its frame's."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            m = np.asarray(im.convert("L") if im.mode not in ("L", "1", "I;16", "I", "F") else im) > 0
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"cannot read mask {path}: {e}", fix="replace the file with a readable PNG/TIF/BMP") from e
    if m.shape[:2] != tuple(shape):
        raise DataError(f"mask {path} is {m.shape[1]}×{m.shape[0]}, its frame {shape[1]}×{shape[0]}",
                        fix="use the mask that belongs to this frame (same width and height)")
    return m


def read_videos(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"video folder not found: {folder}",
                        fix=f"pass the Hyper-Kvasir folder holding {KVASIR_SUBDIR}/ as --data-dir "
                            "(or set dataset.videos), or try --fixture")
    vids = [p for p in sorted(folder.iterdir())
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in VIDEO_SUFFIXES]
    if not vids:
        raise DataError(f"no videos in {folder} (looked for {', '.join(VIDEO_SUFFIXES)})",
                        fix="unpack Hyper-Kvasir's labeled-videos there, or try --fixture")
    return vids


def read_video(path: Path, wanted=None) -> tuple[dict[int, object], int, float]:
    """Frames (RGB uint8) of ``path`` by index (all, or those ``wanted(i)`` accepts), the frame count and the fps.
    A video OpenCV cannot open or decode is a DataError naming it."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise DataError(f"OpenCV cannot open video {path}",
                            fix="re-download or re-encode it (ffmpeg -i in.avi -c:v mjpeg out.avi), or remove it")
        fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        frames, i = {}, 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            if wanted is None or wanted(i):
                frames[i] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            i += 1
    finally:
        cap.release()
    if i == 0:
        raise DataError(f"OpenCV cannot decode any frame of video {path}",
                        fix="re-download or re-encode it (ffmpeg -i in.avi -c:v mjpeg out.avi), or remove it")
    return frames, i, float(fps)


def homographies(video: Path) -> list | None:
    """The fixture's sidecar ``<stem>.json`` (true plane→frame homography per frame), or None."""
    side = video.with_suffix(".json")
    if not side.exists():
        return None
    import numpy as np

    try:
        return [np.asarray(h, dtype=np.float64).reshape(3, 3) for h in json.loads(side.read_text())["H"]]
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{side} is not a homography sidecar ({e})", fix="remove it or regenerate the fixture") from e


# -- fixtures -------------------------------------------------------------------------------------------------------
def _mucosa(rng, h: int, w: int):
    import numpy as np
    from scipy import ndimage as ndi

    base = ndi.gaussian_filter(rng.normal(0, 1, (h, w)), 12)
    base = (base - base.mean()) / (base.std() + 1e-9)
    fine = ndi.gaussian_filter(rng.normal(0, 1, (h, w)), 1.5)
    fine = fine / (fine.std() + 1e-9)
    shade = 1.0 + 0.12 * base + 0.04 * fine
    rgb = np.stack([160 * shade, 62 * shade, 52 * shade], -1)
    # dark thin vessels: random smooth curves
    vessels = np.zeros((h, w), bool)
    for _ in range(int(rng.integers(4, 8))):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        ang = rng.uniform(0, 2 * np.pi)
        for _ in range(300):
            ang += rng.normal(0, 0.15)
            x, y = x + np.cos(ang), y + np.sin(ang)
            if 0 <= int(y) < h and 0 <= int(x) < w:
                vessels[int(y), int(x)] = True
    v = ndi.gaussian_filter(vessels.astype(float), 0.8)
    v = np.clip(v / (v.max() + 1e-9) * 1.6, 0, 1)[..., None]
    rgb = rgb * (1 - v) + np.array([95, 25, 30]) * v
    return rgb


def _disc(h, w, cy, cx, r):
    import numpy as np

    yy, xx = np.ogrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _add_spot(rgb, gt, rng, cy, cx, r):
    """A specular spot peaking at 245–255: radius ≥ 2 a saturated plateau with a soft 1-px halo; smaller ones a
    blurred glint (Gaussian profile, half-height at radius r). GT = where the spot covers at least 20 %."""
    import numpy as np
    from scipy import ndimage as ndi

    h, w = gt.shape
    if r < 2:
        yy, xx = np.ogrid[:h, :w]
        soft = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) * np.log(2) / (r * r))
    else:
        disc = _disc(h, w, cy, cx, r)
        soft = np.clip(ndi.gaussian_filter(disc.astype(float), 0.9) * 1.25, 0, 1)
        soft[disc] = 1.0
    v = rng.uniform(245, 255)
    rgb[:] = rgb * (1 - soft[..., None]) + v * soft[..., None]
    gt |= soft >= 0.2  # the visible highlight: plateau and most of its halo


def fixture_clinicspec(out_dir: Path, seed: int = 0) -> Path:
    """10 frames of 384×288 + masks in the card's layout (images/, masks/, PNG, mask 255 = specular)."""
    import numpy as np
    from PIL import Image
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    root = Path(out_dir)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    h, w = 288, 384
    for k in range(10):
        rgb = _mucosa(rng, h, w)
        gt = np.zeros((h, w), bool)
        for _ in range(int(rng.integers(1, 3))):  # whitish low-saturation tissue patches (false regions)
            cy, cx = rng.uniform(40, h - 40), rng.uniform(40, w - 40)
            ry, rx = rng.uniform(14, 26), rng.uniform(18, 34)
            yy, xx = np.ogrid[:h, :w]
            patch = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
            soft = np.clip(ndi.gaussian_filter(patch.astype(float), 2.0) * 1.3, 0, 1)[..., None]
            tissue = np.array([192, 180, 176]) * (1 + 0.03 * ndi.gaussian_filter(rng.normal(0, 1, (h, w)), 3)[..., None]
                                                   / 0.1)
            rgb = rgb * (1 - soft) + tissue * soft
            for _ in range(int(rng.integers(2, 5))):  # a few highlights on the patch
                a = rng.uniform(0, 2 * np.pi)
                s = rng.uniform(0, 0.6)
                _add_spot(rgb, gt, rng, cy + s * ry * np.sin(a), cx + s * rx * np.cos(a), rng.uniform(1, 3))
        for _ in range(int(rng.integers(10, 31))):
            _add_spot(rgb, gt, rng, rng.uniform(5, h - 5), rng.uniform(5, w - 5), rng.uniform(1, 4))
        rgb = np.clip(rgb + rng.normal(0, 1.5, rgb.shape), 0, 255).astype(np.uint8)
        Image.fromarray(rgb).save(root / "images" / f"{k + 1:03d}.png")
        Image.fromarray((gt * 255).astype(np.uint8)).save(root / "masks" / f"{k + 1:03d}.png")
    return root


def _plane_texture(rng, size: int = 640):
    import numpy as np
    from scipy import ndimage as ndi

    t = sum(ndi.gaussian_filter(rng.normal(0, 1, (size, size)), s) * s ** 0.7 for s in (1.2, 3, 8, 20))
    t = (t - t.mean()) / (t.std() + 1e-9)
    shade = np.clip(1 + 0.25 * t, 0.3, 1.7)
    return np.stack([170 * shade, 75 * shade, 65 * shade], -1).clip(0, 255).astype(np.uint8)


def fixture_kvasir(out_dir: Path, seed: int = 0) -> Path:
    """Two 60-frame MJPG AVIs (25 fps, 384×288) under the Hyper-Kvasir sub-path, with a homography sidecar each."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    root = Path(out_dir)
    folder = root / KVASIR_SUBDIR
    folder.mkdir(parents=True, exist_ok=True)
    h, w, n = 288, 384, 60
    names = ["0a1b2c3d-fixture-video-1", "4e5f6a7b-fixture-video-2"]
    for v, name in enumerate(names):
        tex = _plane_texture(rng)
        c0 = np.array([tex.shape[1] / 2, tex.shape[0] / 2])
        spots = [(rng.uniform(0, w), rng.uniform(0, h), rng.uniform(-1.5, 1.5), rng.uniform(-1.5, 1.5),
                  rng.uniform(1.5, 4)) for _ in range(15)]
        writer = cv2.VideoWriter(str(folder / f"{name}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (w, h))
        hs = []
        for f in range(n):
            s = f / n
            ang = 0.15 * np.sin(2 * np.pi * s + v)
            scale = 1.0 + 0.12 * s
            tx, ty = 30 * np.sin(np.pi * s + v), 20 * s
            c, si = np.cos(ang) * scale, np.sin(ang) * scale
            # plane point p → frame: R·S·(p − c0) + frame centre + t, plus a slight projective tilt
            a = np.array([[c, -si, 0], [si, c, 0], [0, 0, 1]])
            hmat = np.array([[1, 0, w / 2 + tx], [0, 1, h / 2 + ty], [0, 0, 1]]) @ a @ \
                np.array([[1, 0, -c0[0]], [0, 1, -c0[1]], [0.00025 * s, 0.0002 * s, 1]])
            hs.append(hmat.tolist())
            frame = cv2.warpPerspective(tex, hmat, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            frame = frame.astype(np.float32)
            for (x, y, vx, vy, r) in spots:  # highlights that move on their own
                cv2.circle(frame, (int(round(x + vx * f)) % w, int(round(y + vy * f)) % h), int(r),
                           (252, 252, 252), -1, lineType=cv2.LINE_AA)
            writer.write(cv2.cvtColor(frame.clip(0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR))
        writer.release()
        (folder / f"{name}.json").write_text(json.dumps({"H": hs, "fps": 25.0, "note": "plane (640×640) → frame"}))
    return root
