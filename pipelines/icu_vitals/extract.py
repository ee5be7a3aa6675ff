"""The photo → vitals chain and the ``extract`` stage.

Per photo: ARP deskew (rotate on an expanded white canvas) → pad and resize for the corner regressor → 4 corners →
crop (``box``: the axis-aligned box of the corners plus the code's right margin; ``warp``: perspective
rectification) resized to ``crop_size`` → ECG (HSV green mask inside the screen, the contour with the largest
perimeter, y(x) = column-wise mean row) → OCR words → rules. Every step keeps the 3×3 matrix from photo pixels to
its frame, so labelled boxes (the oracle) and the drawn ECG polyline are compared in the crop's frame.

"No screen": a predicted quadrilateral that is not convex, smaller than ``min_screen_area`` of the photo, or a crop
flatter than ``min_screen_std``; the result says so (``screen_found: false`` and the reason), nothing crashes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from medrun.datasets.icu_monitors import VITALS, load_rgb

from . import deskew as dsk
from .rules import extract_vitals

MEAN = np.float32([0.485, 0.456, 0.406])
STD = np.float32([0.229, 0.224, 0.225])


def input_matrix(width: int, height: int, pad, size: int) -> np.ndarray:
    """3×3: photo pixels → the regressor's input pixels (white padding of pad·(W, H) per side, then a resize to
    size²). The regressor's targets are the corners in the padded frame divided by its size (0–1)."""
    pw, ph = pad[0] * width, pad[1] * height
    sx, sy = size / (width + 2 * pw), size / (height + 2 * ph)
    return np.array([[sx, 0, sx * pw], [0, sy, sy * ph], [0, 0, 1]], dtype=np.float64)


def padded_norm(width: int, height: int, pad) -> np.ndarray:
    """3×3: photo pixels → the normalised (0–1) padded frame."""
    return input_matrix(width, height, pad, 1)


def warp_input(image: np.ndarray, mat: np.ndarray, size: int) -> np.ndarray:
    import cv2

    return cv2.warpPerspective(image, mat, (size, size), flags=cv2.INTER_AREA if mat[0, 0] < 0.5 else cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=(255, 255, 255))


def to_tensor(batch: np.ndarray) -> torch.Tensor:
    """(B, S, S, 3) uint8 → ImageNet-normalised (B, 3, S, S) float32."""
    x = (batch.astype(np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def apply(mat: np.ndarray, pts) -> np.ndarray:
    p = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    q = np.c_[p, np.ones(len(p))] @ mat.T
    return q[:, :2] / q[:, 2:3]


def regress(pipe, net, images: list[np.ndarray]) -> list[np.ndarray]:
    """The 4 corners (4, 2) of each image, in its own pixels, through the predictor."""
    mm = pipe.m.model
    out = []
    for i in range(0, len(images), 16):
        chunk = images[i:i + 16]
        mats = [input_matrix(im.shape[1], im.shape[0], mm.pad, mm.input_size) for im in chunk]
        x = to_tensor(np.stack([warp_input(im, m, mm.input_size) for im, m in zip(chunk, mats, strict=True)]))
        y = pipe.predictor(net, x).numpy().reshape(-1, 4, 2)
        for im, u in zip(chunk, y, strict=True):
            out.append(apply(np.linalg.inv(padded_norm(im.shape[1], im.shape[0], mm.pad)), u))
    return out


@dataclass
class Screen:
    name: str
    skew: float = 0.0
    corners: np.ndarray | None = None  # in photo pixels
    found: bool = True
    reason: str = ""
    crop: np.ndarray | None = None
    to_crop: np.ndarray | None = None  # 3×3 photo → crop
    region: np.ndarray | None = None  # screen pixels of the crop
    ecg: tuple[np.ndarray, np.ndarray] | None = None  # (x, y) in crop pixels
    ecg_mask: np.ndarray | None = None
    extra: dict = field(default_factory=dict)


def _convex(q: np.ndarray) -> bool:
    cross = [np.cross(q[(i + 1) % 4] - q[i], q[(i + 2) % 4] - q[(i + 1) % 4]) for i in range(4)]
    return all(c > 0 for c in cross) or all(c < 0 for c in cross)


def crop_screen(image: np.ndarray, quad: np.ndarray, cfg) -> tuple[np.ndarray, np.ndarray]:
    """(crop resized to crop_size, 3×3 image → crop)."""
    import cv2

    cw, ch = cfg.crop_size
    if cfg.crop == "warp":
        mat = cv2.getPerspectiveTransform(np.float32(quad), np.float32([[0, 0], [cw, 0], [cw, ch], [0, ch]]))
    else:
        h, w = image.shape[:2]
        lo, hi = quad.min(0), quad.max(0)
        pad = cfg.margin * (hi - lo)
        x0, y0 = np.clip(lo - pad, 0, [w - 1, h - 1])
        x1, y1 = np.clip(hi + pad + [cfg.right_margin * w, 0], 0, [w, h])
        x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
        sx, sy = cw / (x1 - x0), ch / (y1 - y0)
        mat = np.array([[sx, 0, -sx * x0], [0, sy, -sy * y0], [0, 0, 1]], dtype=np.float64)
    crop = cv2.warpPerspective(image, mat, (cw, ch), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=(255, 255, 255))
    return crop, mat


def trace_ecg(crop: np.ndarray, region: np.ndarray, hue=(0.2, 0.47)):
    """(x, y, component mask) of the ECG: HSV green pixels inside the screen, closed morphologically (a disk of 1.2 %
    of the crop width, ours), the external contour with the largest perimeter (OpenCV), y(x) = the mean row of its
    green pixels in each column; None when nothing green is there. Ours: contours whose mean thickness (2·area /
    perimeter) exceeds 3 % of the crop height are skipped, so a solid green patch that a loose screen box lets in
    (wall paint, a sticker) never wins over a thin trace."""
    import cv2

    hsv = cv2.cvtColor(crop, cv2.COLOR_RGB2HSV)  # H in 0–179
    green = ((hsv[..., 0] >= hue[0] * 180) & (hsv[..., 0] <= hue[1] * 180) & (hsv[..., 1] > 90) & (hsv[..., 2] > 90)
             & region).astype(np.uint8)
    k = max(3, int(round(0.012 * crop.shape[1])) | 1)  # close the gaps JPEG and thin strokes leave in the line
    closed = cv2.morphologyEx(green, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    contours, _ = cv2.findContours(closed, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    thin = [c for c in contours if 2 * cv2.contourArea(c) / max(cv2.arcLength(c, True), 1) <= 0.03 * crop.shape[0]]
    best = max(thin or contours, key=lambda c: cv2.arcLength(c, True))
    comp = np.zeros_like(green)
    cv2.drawContours(comp, [best], -1, 1, thickness=cv2.FILLED)
    comp &= green
    cols = np.nonzero(comp.any(0))[0]
    if len(cols) < 10:
        return None
    rows = np.arange(comp.shape[0], dtype=np.float64)[:, None]
    ys = (comp[:, cols] * rows).sum(0) / comp[:, cols].sum(0)
    return cols.astype(np.float64), ys, comp.astype(bool)


def ecg_correlation(screen: Screen, polyline) -> float:
    """Pearson r between the traced y(x) and the drawn polyline measured the same way: the polyline is mapped into
    the crop, rasterised (OpenCV) at the stroke width the trace shows (the median green column height) and reduced
    to its column-wise mean row, at the traced columns; 0 when no trace was found. (Interpolating the polyline itself,
    or rasterising it 1 px thin, would compare a QRS spike's tip with the tracer's column mean of a thick stroke: on
    the fixture that alone costs 0.1 in r.)"""
    import cv2

    if screen.ecg is None or not polyline:
        return 0.0
    h, w = screen.region.shape
    xs, ys = screen.ecg
    cols = xs.astype(int)
    width = 1 if screen.ecg_mask is None else max(1, int(round(np.median(screen.ecg_mask[:, cols].sum(0)))))
    canvas = np.zeros((h, w), np.uint8)
    cv2.polylines(canvas, [np.round(apply(screen.to_crop, polyline)).astype(np.int32).reshape(-1, 1, 2)], False, 1,
                  width)
    hit = canvas[:, cols].sum(0) > 0
    if hit.sum() < 10:
        return 0.0
    rows = np.arange(h, dtype=np.float64)[:, None]
    truth = (canvas[:, cols[hit]] * rows).sum(0) / canvas[:, cols[hit]].sum(0)
    if np.std(truth) == 0 or np.std(ys[hit]) == 0:
        return 0.0
    return float(np.corrcoef(truth, ys[hit])[0, 1])


def locate(pipe, net, names: list[str], images: list[np.ndarray], *, keep: bool = True) -> list[Screen]:
    """Deskew, regress corners, check and crop each image; the ECG is traced in every found screen."""
    import cv2

    cfg = pipe.m.extract
    screens, rotated = [], []
    for name, im in zip(names, images, strict=True):
        if cfg.deskew:
            out, mat, angle = dsk.deskew(im, pipe.m.deskew)
        else:
            out, mat, angle = im, np.eye(3), 0.0
        screens.append(Screen(name, skew=angle, extra={"to_deskewed": mat}))
        rotated.append(out)
    for s, im, quad_d in zip(screens, rotated, regress(pipe, net, rotated), strict=True):
        to_d = s.extra["to_deskewed"]
        s.corners = apply(np.linalg.inv(to_d), quad_d)
        area = 0.5 * abs(np.cross(quad_d[2] - quad_d[0], quad_d[3] - quad_d[1]))
        if not _convex(quad_d):
            s.found, s.reason = False, "no screen detected: the predicted corners are not a convex quadrilateral"
        elif area < cfg.min_screen_area * im.shape[0] * im.shape[1]:
            s.found, s.reason = False, ("no screen detected: the predicted screen covers "
                                        f"{area / (im.shape[0] * im.shape[1]):.1%} of the photo")
        if not s.found:
            continue
        crop, to_c = crop_screen(im, quad_d, cfg)
        s.to_crop = to_c @ to_d
        region = np.zeros(crop.shape[:2], np.uint8)
        cv2.fillConvexPoly(region, np.round(apply(to_c, quad_d)).astype(np.int32), 1)
        s.region = region.astype(bool)
        if float(crop[s.region].std()) < cfg.min_screen_std if s.region.any() else True:
            s.found, s.reason = False, "no screen detected: the predicted screen is flat (no display content)"
            continue
        traced = trace_ecg(crop, s.region, cfg.green_hue)
        if traced is not None:
            s.ecg, s.ecg_mask = (traced[0], traced[1]), traced[2]
        s.crop = crop if keep else None
    return screens


def read(pipe, engine, s: Screen, boxes=None) -> tuple[dict, list]:
    """The vitals of one located screen with one engine, and the words it read."""
    if not s.found:
        return dict.fromkeys(VITALS), []
    oracle = [(t, apply(s.to_crop, p).astype(np.float32)) for t, p in boxes] if boxes is not None else None
    words = engine.read(s.crop, region=s.region, exclude=s.ecg_mask, oracle=oracle)
    cfg = pipe.m.extract
    return extract_vitals(words, rel_height=cfg.rel_height, green_hue=cfg.green_hue), words


def result(s: Screen, vitals: dict, engine: str) -> dict:
    out = {"screen_found": s.found, "skew_deg": round(s.skew, 3), "ocr": engine,
           "corners": None if s.corners is None else np.round(s.corners, 2).tolist(),
           **{k: vitals.get(k) for k in VITALS}}
    if not s.found:
        out["reason"] = s.reason
    if s.ecg is not None:
        w, h = s.crop.shape[1], s.crop.shape[0]
        out["ecg"] = {"frame": f"screen crop {w}×{h}, x and y in 0–1", "x": np.round(s.ecg[0] / w, 5).tolist(),
                      "y": np.round(s.ecg[1] / h, 5).tolist()}
    return out


def screen_figure(ctx, name: str, s: Screen, words, vitals: dict, truth: dict | None = None) -> None:
    """The cropped screen with the words read (boxes and text), the ECG trace and the vitals in the title."""
    with ctx.figure(f"extract/{name}", figsize=(9, 5.6)) as (fig, ax):
        if s.crop is None:
            ax.text(0.5, 0.5, f"no screen: {s.reason}", ha="center", va="center")
            ax.axis("off")
            return
        ax.imshow(s.crop)
        for w in words:
            p = np.vstack([w.poly, w.poly[:1]])
            ax.plot(p[:, 0], p[:, 1], color="white", lw=0.8)
            ax.text(w.poly[0, 0], w.poly[0, 1] - 4, w.text, color="yellow", fontsize=7)
        if s.ecg is not None:
            ax.plot(*s.ecg, color="magenta", lw=1.0)
        got = "  ".join(f"{k} {vitals.get(k)}" for k in VITALS)
        want = "" if truth is None else "\ntruth: " + "  ".join(f"{k} {truth.get(k)}" for k in VITALS)
        ax.set_title(f"{name}: deskew {s.skew:+.1f}°\nread: {got}{want}", fontsize=8)
        ax.axis("off")


def stage(pipe) -> dict:
    """``medrun extract``: every photo (extract.input, or the eval split) → ``extracted/<name>.json`` with the
    vitals and the ECG trace, ``per_case.csv``, figures of the first eval.figures photos."""
    from medrun.datasets.icu_monitors import Photo

    from ..report import paper_md

    ctx, cfg = pipe.ctx, pipe.m.extract
    net = pipe.trained_model()
    if cfg.input:
        items = [(f.name, f, None) for f in ctx.predict_inputs(cfg.input, what="monitor photos")]
    else:
        items = [(p.name, p.path, p) for p in pipe.split_of(pipe.splits())]
    engine = pipe.engine(cfg.ocr)
    rows, t0 = [], time.perf_counter()
    for i, (name, path, photo) in enumerate(items):
        image = load_rgb(path)
        s = locate(pipe, net, [name], [image])[0]
        boxes = [(t, np.float32(p)) for t, p in photo.boxes] if isinstance(photo, Photo) and photo.boxes else None
        if cfg.ocr == "oracle" and boxes is None and s.found:
            from medrun.errors import DataError

            raise DataError(f"OCR engine 'oracle' needs labelled word boxes, and {path} has none in boxes.csv",
                            fix="use -o extract.ocr=crnn-tiny (or paddle/easyocr)")
        vitals, words = read(pipe, engine, s, boxes)
        out = result(s, vitals, cfg.ocr)
        stem = name.rsplit(".", 1)[0]
        ctx.write_json(f"extracted/{stem}.json", {"image": str(path), **out})
        rows.append({"image": name, "screen_found": int(s.found), "reason": s.reason, "skew_deg": s.skew,
                     **{k: vitals.get(k) for k in VITALS}, "ecg_points": 0 if s.ecg is None else len(s.ecg[0])})
        if i < pipe.m.eval.figures:
            screen_figure(ctx, stem, s, words, vitals, photo.vitals if isinstance(photo, Photo) else None)
    secs = (time.perf_counter() - t0) / max(1, len(items))
    ctx.write_csv("per_case.csv", rows)
    metrics = {"n": len(rows), "screens_found": sum(r["screen_found"] for r in rows), "secs_per_image": secs,
               "images_per_s": 1 / secs if secs > 0 else float("nan")}
    ctx.log(f"extracted {len(rows)} photos ({metrics['screens_found']} screens found), {secs:.3f} s/image")
    ctx.write_text("paper.md", paper_md(ctx.spec, pipe.m, metrics, ctx, expect={}, keys=list(metrics),
                                        title="ICU monitor vitals: extract"))
    return metrics
