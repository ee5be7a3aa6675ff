"""superpixel-label, the annotation method: superpixels → simulated sparse labels → gap filling → gap statistics.

Pure functions on numpy arrays (no torch): scikit-image (``slic``, ``random_walker``, ``watershed``), scipy
(``distance_transform_edt``) and OpenCV's contrib module (``ximgproc.createSuperpixelSEEDS``).

Label maps use the card's convention: 1 = lesion (type a superpixel), 0 = background (type b), ``IGNORE`` = 255 =
unlabelled gap (type c). A filled map holds 0/1 only; the ``nofill`` map keeps 255 in the gap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medrun.errors import EnvError, UsageError

IGNORE = 255
METHODS = ("slic", "seeds", "snic")
FILLS = ("nofill", "dist", "rw")


@dataclass(frozen=True)
class Params:
    n_segments: int = 800
    compactness: float = 10.0
    seeds_levels: int = 4
    seeds_prior: int = 2
    seeds_bins: int = 5
    seeds_iterations: int = 4
    snic_impl: str = "auto"  # auto | pysnic | watershed
    watershed_compactness: float = 0.001
    purity_tol: float = 0.0
    grey_as_rgb: bool = False
    rw_beta: float = 130.0
    rw_mode: str = "cg_j"


def _float01(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image, dtype=np.float64)
    return img / 255.0 if img.max() > 1.0 else img


def _rgb(image: np.ndarray) -> np.ndarray:
    """A grey image as three equal channels (as an image reader that loads every file as colour gives it)."""
    img = _float01(image)
    return img if img.ndim == 3 else np.repeat(img[..., None], 3, axis=-1)


def _lab(image: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2lab

    return rgb2lab(_rgb(image))


def superpixels(image: np.ndarray, method: str, p: Params = Params()) -> np.ndarray:
    """Superpixel labels (H, W) int32, 0 … K−1, of an image (H, W) grey or (H, W, 3) RGB, uint8 or float in [0, 1].

    ``slic``: skimage ``slic(n_segments, compactness)``: Lab for RGB; a grey image with ``channel_axis=None`` on
    its [0, 1] values as the card says (compactness 10 then makes the spatial term dominate: nearly a regular grid),
    or with ``grey_as_rgb`` as three equal channels in Lab (L 0–100, the range compactness 10 is meant for).
    ``seeds``: OpenCV ``ximgproc.createSuperpixelSEEDS(levels 4, prior 2, 5 bins)`` iterated 4 times (needs
    opencv-contrib-python-headless; exit 4 otherwise). ``snic``: ``pysnic`` on the Lab image when installed
    (``snic_impl: auto|pysnic``), else (``auto``) or with ``snic_impl: watershed`` a SNIC-like seeded region growing:
    skimage's compact watershed of the Lab gradient from a regular grid of ``n_segments`` seeds."""
    from skimage.segmentation import slic

    img = np.asarray(image)
    if method == "slic":
        grey = img.ndim == 2 and not p.grey_as_rgb
        seg = slic(_float01(img) if grey else _rgb(img), n_segments=p.n_segments, compactness=p.compactness,
                   start_label=0, channel_axis=None if grey else -1)
    elif method == "seeds":
        seg = _seeds(img, p)
    elif method == "snic":
        seg = _snic(img, p)
    else:
        raise UsageError(f"unknown superpixel method '{method}'", fix=f"use one of {', '.join(METHODS)}")
    _, inv = np.unique(seg, return_inverse=True)
    return inv.reshape(seg.shape).astype(np.int32)


def seeds_available() -> bool:
    import cv2

    return hasattr(cv2, "ximgproc") and hasattr(cv2.ximgproc, "createSuperpixelSEEDS")


def _seeds(img: np.ndarray, p: Params) -> np.ndarray:
    import cv2

    if not seeds_available():
        raise EnvError("superpixel method 'seeds' needs cv2.ximgproc.createSuperpixelSEEDS, which the installed OpenCV "
                       "lacks", fix="pip install opencv-contrib-python-headless (replacing opencv-python-headless), "
                                    "or leave seeds out of superpixel.method and of annotate / gap_stats / "
                                    "table1.methods")
    u8 = np.asarray(img if img.dtype == np.uint8 else np.clip(_float01(img) * 255, 0, 255), np.uint8)
    if u8.ndim == 3:
        u8 = cv2.cvtColor(u8, cv2.COLOR_RGB2Lab)  # OpenCV's SEEDS samples use any colour space; Lab as SLIC
    h, w = u8.shape[:2]
    c = 1 if u8.ndim == 2 else u8.shape[2]
    s = cv2.ximgproc.createSuperpixelSEEDS(w, h, c, p.n_segments, p.seeds_levels, p.seeds_prior, p.seeds_bins)
    s.iterate(u8, p.seeds_iterations)
    return np.asarray(s.getLabels())


def snic_backend(p: Params) -> str:
    if p.snic_impl == "watershed":
        return "watershed"
    try:
        import pysnic  # noqa: F401

        return "pysnic"
    except ImportError:
        if p.snic_impl == "pysnic":
            raise EnvError("superpixel.snic_impl 'pysnic' needs the pysnic package",
                           fix="pip install pysnic, or use -o superpixel.snic_impl=watershed") from None
        return "watershed"


def _snic(img: np.ndarray, p: Params) -> np.ndarray:
    lab = _lab(img)
    if snic_backend(p) == "pysnic":
        from pysnic.algorithms.snic import snic

        seg, _, _ = snic(lab.tolist(), p.n_segments, p.compactness)
        return np.asarray(seg)
    from skimage.filters import sobel
    from skimage.segmentation import watershed

    h, w = lab.shape[:2]
    grad = np.sqrt(sum(sobel(lab[..., c]) ** 2 for c in range(lab.shape[2])))
    step = max(1.0, np.sqrt(h * w / p.n_segments))
    ys = np.arange(step / 2, h, step).astype(int)
    xs = np.arange(step / 2, w, step).astype(int)
    markers = np.zeros((h, w), np.int32)
    markers[np.ix_(ys, xs)] = np.arange(1, len(ys) * len(xs) + 1).reshape(len(ys), len(xs))
    return watershed(grad, markers, compactness=p.watershed_compactness)


def sparse_labels(seg: np.ndarray, gt: np.ndarray, purity_tol: float = 0.0) -> np.ndarray:
    """The simulated annotator: per superpixel s, f_s = |s ∩ G| / |s|; f_s ≥ 1 − tol → 1 (type a),
    f_s ≤ tol → 0 (type b), otherwise ``IGNORE`` (type c, the gap). ``tol`` 0 is the paper's exact purity."""
    seg = np.asarray(seg).ravel()
    g = (np.asarray(gt) > 0).ravel()
    size = np.bincount(seg)
    fg = np.bincount(seg, weights=g, minlength=len(size))
    f = np.divide(fg, size, out=np.zeros(len(size)), where=size > 0)
    kind = np.full(len(size), IGNORE, np.uint8)
    if purity_tol > 0:
        kind[f >= 1 - purity_tol] = 1
        kind[f <= purity_tol] = 0
    else:
        kind[fg == size] = 1  # integer counts: exactly fully inside / outside
        kind[fg == 0] = 0
    return kind[seg].reshape(np.shape(gt))


def fill(labels: np.ndarray, how: str, image: np.ndarray | None = None, beta: float = 130.0,
         mode: str = "cg_j") -> np.ndarray:
    """The gap (``IGNORE``) of a sparse label map filled: ``nofill`` keeps it; ``dist`` gives each gap pixel the
    class of the nearer labelled pixel (Euclidean ``distance_transform_edt``; a tie → background); ``rw`` runs
    skimage's random walker with all type-a pixels as foreground and all type-b pixels as background seeds.
    With only one seed class present the gap takes that class (none: background)."""
    lab = np.asarray(labels, np.uint8)
    if how == "nofill":
        return lab.copy()
    gap = lab == IGNORE
    out = np.where(gap, 0, lab).astype(np.uint8)
    if not gap.any():
        return out
    has_fg, has_bg = bool((lab == 1).any()), bool((lab == 0).any())
    if not (has_fg and has_bg):
        out[gap] = 1 if has_fg else 0
        return out
    if how == "dist":
        from scipy.ndimage import distance_transform_edt

        d_f = distance_transform_edt(lab != 1)  # distance to the nearest labelled-foreground pixel
        d_b = distance_transform_edt(lab != 0)
        out[gap] = (d_f < d_b)[gap]
        return out
    if how == "rw":
        from skimage.segmentation import random_walker

        if image is None:
            raise ValueError("rw fill needs the image")
        img = _float01(image)
        markers = np.where(lab == 1, 1, np.where(lab == 0, 2, 0)).astype(np.int32)
        import warnings

        with warnings.catch_warnings():  # "probability range is outside [0, 1]": only the argmax is used
            warnings.simplefilter("ignore", UserWarning)
            walked = random_walker(img, markers, beta=beta, mode=mode, channel_axis=-1 if img.ndim == 3 else None)
        out[gap] = (walked == 1)[gap]
        return out
    raise UsageError(f"unknown fill '{how}'", fix=f"use one of {', '.join(FILLS)}")


def gap_stats(labels: np.ndarray, filled: np.ndarray, gt: np.ndarray) -> dict:
    """Eq. N = M + E_f + E_b over the gap of one image: N gap pixels, M filled as G, E_f G-foreground filled as
    background, E_b G-background filled as foreground (``M_over_N`` = M/N, 1 for an image without gap)."""
    gap = np.asarray(labels) == IGNORE
    g, f = np.asarray(gt) > 0, np.asarray(filled) == 1
    n = int(gap.sum())
    m = int((gap & (f == g)).sum())
    e_f = int((gap & g & ~f).sum())
    e_b = int((gap & ~g & f).sum())
    return {"N": n, "M": m, "E_f": e_f, "E_b": e_b, "M_over_N": m / n if n else 1.0}


def annotate(image: np.ndarray, gt: np.ndarray, method: str, fills=FILLS, p: Params = Params()) -> dict:
    """One image: ``{"superpixels", "sparse", <fill>: map}`` for the named fills."""
    seg = superpixels(image, method, p)
    sparse = sparse_labels(seg, gt, p.purity_tol)
    out = {"superpixels": seg, "sparse": sparse}
    for how in fills:
        out[how] = fill(sparse, how, image, p.rw_beta, p.rw_mode)
    return out
