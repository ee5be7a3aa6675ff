"""Skew estimation by adaptive radial projection (ARP, Pham et al. 2022) on the Fourier magnitude spectrum, the
rotation that undoes it, and the ``deskew`` stage.

A(θ) = Σ_{s=0..R} M[c_y + s·cosθ, c_x − s·sinθ] over the normalised log-magnitude M (bilinear sampling, scipy's
``map_coordinates``) on a coarse grid; B(θ) is the same sum restricted to s ∈ [R/8, R] on a fine grid ±fine_range
around θa (the paper prints B identical to A; the card's correction). θf = θa if |θa − θb| > D else θb.
Choices of ours (recorded in the pipeline docstring): the grey image is centre-cropped to a square (rotations of a
non-square spectrum are not rotations of its samples) and multiplied by a Hann window (the wrap-around border
would otherwise add an axis-aligned cross to the spectrum); R = side/2 − 1 (the paper's min(H, W) runs past it).
"""

from __future__ import annotations

import math

import numpy as np


def spectrum(gray: np.ndarray) -> np.ndarray:
    """Normalised log|fftshift(FFT2)| of the windowed central square of a grey image."""
    h, w = gray.shape
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    g = gray[y0:y0 + side, x0:x0 + side].astype(np.float64)
    g = (g - g.mean()) * np.outer(np.hanning(side), np.hanning(side))
    m = np.log1p(np.abs(np.fft.fftshift(np.fft.fft2(g))))
    return (m - m.min()) / max(m.max() - m.min(), 1e-12)


def projection(m: np.ndarray, thetas_deg: np.ndarray, s_min: int = 0) -> np.ndarray:
    from scipy.ndimage import map_coordinates

    side = m.shape[0]
    c = side // 2
    r = side // 2 - 1
    s = np.arange(s_min, r + 1, dtype=np.float64)
    th = np.deg2rad(thetas_deg)[:, None]
    rows, cols = c + s[None] * np.cos(th), c - s[None] * np.sin(th)
    vals = map_coordinates(m, [rows.ravel(), cols.ravel()], order=1, mode="nearest")
    return vals.reshape(len(thetas_deg), -1).sum(1)


def arp_angle(gray: np.ndarray, theta_max: float = 45.0, step: float = 0.1, fine_range: float = 1.0,
              fine_step: float = 0.02, max_disagreement: float = 0.5) -> dict:
    """The skew of an image in degrees (counter-clockwise positive, as ``cv2.getRotationMatrix2D``): rotating the
    image by −angle deskews it. Returns {angle, theta_a, theta_b}."""
    m = spectrum(gray)
    coarse = np.arange(-theta_max, theta_max + step / 2, step)
    theta_a = float(coarse[np.argmax(projection(m, coarse))])
    fine = np.arange(theta_a - fine_range, theta_a + fine_range + fine_step / 2, fine_step)
    theta_b = float(fine[np.argmax(projection(m, fine, s_min=(m.shape[0] // 2 - 1) // 8))])
    theta_f = theta_a if abs(theta_a - theta_b) > max_disagreement else theta_b
    return {"angle": -theta_f, "theta_a": -theta_a, "theta_b": -theta_b}


def rotation(width: int, height: int, angle: float) -> tuple[np.ndarray, tuple[int, int]]:
    """The 3×3 matrix rotating an image by ``angle`` degrees (counter-clockwise) about its centre onto an expanded
    canvas, and that canvas' (width, height)."""
    import cv2

    rot = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
    cos, sin = abs(rot[0, 0]), abs(rot[0, 1])
    nw, nh = int(math.ceil(height * sin + width * cos)), int(math.ceil(height * cos + width * sin))
    rot[0, 2] += nw / 2 - width / 2
    rot[1, 2] += nh / 2 - height / 2
    return np.vstack([rot, [0, 0, 1]]), (nw, nh)


def rotate(image: np.ndarray, angle: float, fill: int = 255) -> tuple[np.ndarray, np.ndarray]:
    """``image`` rotated by ``angle`` degrees on an expanded canvas filled with ``fill`` (white), and the 3×3 matrix
    from the old pixel coordinates to the new."""
    import cv2

    mat, size = rotation(image.shape[1], image.shape[0], angle)
    out = cv2.warpAffine(image, mat[:2], size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=(fill,) * (image.shape[2] if image.ndim == 3 else 1))
    return out, mat


def gray(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else image.astype(np.float32) @ np.float32([0.299, 0.587, 0.114])


def estimate(image: np.ndarray, cfg) -> dict:
    """ARP on an RGB or grey image with the manifest's ``deskew`` settings."""
    return arp_angle(gray(image), cfg.theta_max, cfg.step, cfg.fine_range, cfg.fine_step, cfg.max_disagreement)


def deskew(image: np.ndarray, cfg) -> tuple[np.ndarray, np.ndarray, float]:
    """(deskewed image, 3×3 matrix photo → deskewed, skew angle in degrees)."""
    angle = estimate(image, cfg)["angle"]
    out, mat = rotate(image, -angle)
    return out, mat, angle


def rectified(photo: np.ndarray, corners, size=(480, 270)) -> np.ndarray:
    """The screen warped from its 4 corners (TL, TR, BR, BL) onto a ``size`` rectangle."""
    import cv2

    w, h = size
    mat = cv2.getPerspectiveTransform(np.float32(corners), np.float32([[0, 0], [w, 0], [w, h], [0, h]]))
    return cv2.warpPerspective(photo, mat, (w, h), flags=cv2.INTER_LINEAR)


def rotation_check(photos, cfg, rng, log=print) -> tuple[dict, list[dict]]:
    """Each photo's rectified screen (true corners), padded, rotated by a random angle in ±check_range and deskewed:
    the absolute error of the recovered angle."""
    from medrun.datasets.icu_monitors import load_rgb

    rows = []
    for p in photos:
        screen = rectified(load_rgb(p.path), p.corners)
        screen = np.pad(screen, ((40, 40), (40, 40), (0, 0)), constant_values=255)
        true = float(rng.uniform(-cfg.check_range, cfg.check_range))
        rotated, _ = rotate(screen, true)
        est = estimate(rotated, cfg)
        rows.append({"image": p.name, "true_deg": true, "estimated_deg": est["angle"],
                     "error_deg": abs(est["angle"] - true)})
    errs = [r["error_deg"] for r in rows]
    metrics = {"deskew_err_mean_deg": float(np.mean(errs)), "deskew_err_max_deg": float(np.max(errs)),
               "deskew_within_1deg": float(np.mean([e <= 1.0 for e in errs])), "deskew_n": len(errs)}
    log(f"deskew check: mean |error| {metrics['deskew_err_mean_deg']:.3f}°, max {metrics['deskew_err_max_deg']:.3f}° "
        f"over {len(errs)} rotations of ±{cfg.check_range}°")
    return metrics, rows


def stage(pipe) -> dict:
    """``medrun deskew``: the skew angle of every photo (deskew.input, or the dataset's photos), the deskewed
    images under ``deskewed/``, ``per_case.csv``; with ``deskew.check`` the synthetic-rotation check."""
    import time

    from medrun.datasets.icu_monitors import load_rgb

    from ..report import paper_md

    cfg, ctx = pipe.m.deskew, pipe.ctx
    photos = pipe.photos()
    files = ctx.predict_inputs(cfg.input, what="monitor photos") if cfg.input else [p.path for p in photos]
    rows, t0 = [], time.perf_counter()
    for f in files:
        image = load_rgb(f)
        est = estimate(image, cfg)
        out, _ = rotate(image, -est["angle"])
        rel = f"deskewed/{f.stem}.png"
        ctx.write_png(rel, out)
        rows.append({"image": f.name, "angle_deg": est["angle"], "theta_a_deg": est["theta_a"],
                     "theta_b_deg": est["theta_b"], "deskewed": rel})
    secs = (time.perf_counter() - t0) / max(1, len(files))
    metrics = {"n": len(rows), "secs_per_image": secs,
               "mean_abs_angle_deg": float(np.mean([abs(r["angle_deg"]) for r in rows]))}
    sections = []
    if cfg.check:
        check, check_rows = rotation_check(photos, cfg, np.random.default_rng(pipe.m.seed), ctx.log)
        metrics.update(check)
        ctx.write_csv("rotation_check.csv", check_rows)
        with ctx.figure("deskew_check", figsize=(5, 4)) as (fig, ax):
            ax.scatter([r["true_deg"] for r in check_rows], [r["estimated_deg"] for r in check_rows], s=12)
            lim = cfg.check_range * 1.1
            ax.plot([-lim, lim], [-lim, lim], "k--", lw=0.8)
            ax.set_xlabel("applied rotation (°)")
            ax.set_ylabel("ARP estimate (°)")
            ax.set_title(f"ARP: max |error| {check['deskew_err_max_deg']:.2f}°")
        sections.append(f"## Synthetic rotations\n\nMean |error| {check['deskew_err_mean_deg']:.3f}°, max "
                        f"{check['deskew_err_max_deg']:.3f}° over {check['deskew_n']} rotated screens "
                        f"(±{cfg.check_range}°).")
    ctx.write_csv("per_case.csv", rows)
    ctx.write_text("paper.md", paper_md(ctx.spec, pipe.m, metrics, ctx, expect={}, keys=list(metrics),
                                        title="ICU monitor vitals: deskew (ARP)", sections=sections))
    return metrics
