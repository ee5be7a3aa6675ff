"""``refine`` (the annotation use): one patch of a side (``refine.side``, top-left ``refine.x``/``refine.y`` at full
resolution, ``dataset.patch`` px) and a user-drawn stroke PNG of the same size (red = add, blue = erase; a grey or
single-channel PNG: > 0 = add) → f_init's mask Y, the pasted Y^Δ and f_iter's Y', written as PNGs at patch size
(``refined.png``, ``initial.png``, ``pasted.png``) with a before/after figure; pFM of each against the drawing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medrun.errors import DataError, UsageError
from medrun.metrics.segmentation import pseudo_fmeasure

from . import data as D
from . import interaction as I


def read_strokes(path: Path, size: int) -> np.ndarray:
    """Δ (size, size) int8 from the stroke PNG: +1 where red dominates (or grey > 0), −1 where blue dominates."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DataError(f"stroke PNG not found: {path}", fix="-o refine.strokes=/path/to/strokes.png")
    try:
        with Image.open(path) as im:
            w, h = im.size
            arr = np.asarray(im.convert("RGBA") if im.mode in ("RGBA", "LA", "P") else im.convert("RGB")
                             if im.mode != "L" else im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot read stroke PNG {path}: {e.__class__.__name__}: {e}", fix="save it as PNG") from None
    if (w, h) != (size, size):
        raise DataError(f"stroke PNG {path} is {w}×{h} but the patch is {size}×{size}",
                        fix=f"draw the strokes on a {size}×{size} canvas (dataset.patch)")
    if arr.ndim == 2:
        return (arr > 0).astype(np.int8)
    r, b = arr[..., 0].astype(int), arr[..., 2].astype(int)
    on = arr[..., 3] > 0 if arr.shape[-1] == 4 else np.ones(r.shape, bool)
    return (np.where(on & (r > b) & (r > 127), 1, 0) - np.where(on & (b > r) & (b > 127), 1, 0)).astype(np.int8)


def refine(p) -> dict:
    rc, d = p.m.refine, p.m.dataset
    if not rc.side or not rc.strokes:
        raise UsageError("refine needs a patch and strokes", fix="-o refine.side=<ID>_<side> -o refine.x=.. "
                                                                 "-o refine.y=.. -o refine.strokes=strokes.png")
    if rc.side not in p.mirrors:
        raise UsageError(f"refine.side '{rc.side}' is not an annotated side",
                         fix=f"use one of {', '.join(sorted(p.mirrors))}")
    m = p.mirrors[rc.side]
    if rc.y + d.patch > m.x.shape[0] or rc.x + d.patch > m.x.shape[1]:
        raise UsageError(f"patch at x {rc.x}, y {rc.y} of {d.patch} px leaves side {rc.side} "
                         f"({m.x.shape[1]}×{m.x.shape[0]})", fix="move refine.x / refine.y inside the side")
    strokes = Path(rc.strokes).expanduser()
    delta_full = read_strokes(strokes, d.patch)
    f_init, f_iter = p.trained_pair()
    p.ctx.record_splits({"refine": [*m.files, str(strokes)]})
    x, gt, _ = D.crop(m, rc.y, rc.x, d.patch, d.net_size)
    delta = torch.from_numpy(delta_full.astype(np.float32))[None, None]
    if d.patch != d.net_size:
        delta = F.interpolate(delta, size=(d.net_size, d.net_size), mode="nearest")
    y0 = p.forward(f_init, x[None])
    yp = p.forward(f_iter, p.hints.inputs(x[None], y0, delta))

    def full(t):  # network size → patch size
        return (F.interpolate(t, size=(d.patch, d.patch), mode="bilinear")[0, 0] > 0).numpy() if d.patch != d.net_size \
            else (t[0, 0] > 0).numpy()

    y_init, y_ref = full(y0), full(yp)
    pasted = I.paste(y_init, delta_full)
    g = m.gt[rc.y:rc.y + d.patch, rc.x:rc.x + d.patch]
    for name, a in (("initial", y_init), ("pasted", pasted), ("refined", y_ref)):
        p.ctx.write_png(f"{name}.png", a.astype(np.uint8) * 255)
    with p.ctx.figure("refine_before_after", ncols=4, figsize=(13, 3.6)) as (fig, ax):
        panels = [(m.x[rc.y:rc.y + d.patch, rc.x:rc.x + d.patch], "X", "gray"), (y_init, "before: Y = f_init", "gray"),
                  (delta_full, "strokes Δ (red add, blue erase)", "bwr"), (y_ref, "after: Y' = f_iter", "gray")]
        for a, (img, title, cmap) in zip(ax, panels, strict=True):
            a.imshow(img, cmap=cmap, **({"vmin": -1, "vmax": 1} if cmap == "bwr" else {}))
            a.set_title(title, fontsize=9)
            a.axis("off")
    metrics = {"side": rc.side, "x": rc.x, "y": rc.y, "stroke_add_px": int((delta_full > 0).sum()),
               "stroke_erase_px": int((delta_full < 0).sum()), "changed_px": int((y_ref != y_init).sum())}
    if g.any():
        metrics.update({f"pfm_{k}": pseudo_fmeasure(a, g)["pfm"]
                        for k, a in (("initial", y_init), ("pasted", pasted), ("refined", y_ref))})
    p.ctx.write_csv("per_case.csv", [metrics])
    p.ctx.log(f"refine {rc.side}@{rc.y},{rc.x}: +{metrics['stroke_add_px']} / −{metrics['stroke_erase_px']} stroke px, "
              f"{metrics['changed_px']} px changed")
    return metrics
