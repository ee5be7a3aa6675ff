"""Local features and matching (card steps 8–9): the affine-covariant detector (kornia scale-space DoG or Hessian
blobs with affine shape adaptation and dominant orientation, 128-D SIFT descriptors on 41×41 patches, LAFs = the
paper's 2×3 frames F = [L | t]), OpenCV's SIFT, ORB and Harris (GFTT + SIFT descriptors) baselines, brute-force
k = 2 matching with the ratio test, and Graph-Cut RANSAC (OpenCV USAC_ACCURATE) on a fundamental matrix."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DETECTORS = ("covariant", "sift", "orb", "harris")
UNAVAILABLE = {"surf": "needs the non-free opencv-contrib build", "superpoint": "needs SuperPoint weights",
               "e-sp": "needs Endoscopy-SuperPoint weights"}


@dataclass
class Features:
    xy: np.ndarray  # (N, 2) centres in pixels
    desc: np.ndarray  # (N, D) float32 (uint8 for ORB)
    binary: bool = False
    lafs: np.ndarray | None = None  # (N, 2, 3) affine frames (covariant detector only)


_NETS: dict = {}


def covariant_net(num_features: int = 8000, response: str = "dog"):
    """One ``nn.Module``: grey image (B=1, 1, H, W) in [0, 1] → (LAFs (1, N, 2, 3), responses (1, N), SIFT
    descriptors (N, 128)), so eval/predict run it through ``ctx.predictor()``."""
    key = (num_features, response)
    if key not in _NETS:
        import kornia.feature as KF
        import torch
        from kornia.geometry import ScalePyramid

        class CovariantNet(torch.nn.Module):
            def __init__(self):
                super().__init__()
                resp = KF.BlobDoG() if response == "dog" else KF.BlobHessian()
                # 3 levels per octave from σ 1.6 on the doubled image (as SIFT and covdet), bright and dark blobs
                self.det = KF.ScaleSpaceDetector(
                    num_features, resp_module=resp, scale_space_response=response == "dog",
                    scale_pyr_module=ScalePyramid(3, 1.6, 15, double_image=True), mr_size=6.0,
                    aff_module=KF.LAFAffineShapeEstimator(19), ori_module=KF.LAFOrienter(19),
                    minima_are_also_good=True)
                self.desc = KF.SIFTDescriptor(41, rootsift=False)

            def forward(self, x):
                lafs, resp = self.det(x)
                patches = KF.extract_patches_from_pyramid(x, lafs, 41)
                return lafs, resp, self.desc(patches[0])

        _NETS[key] = CovariantNet().eval()
    return _NETS[key]


def covariant(gray: np.ndarray, num_features: int = 8000, response: str = "dog", pred=None) -> Features:
    """Affine-covariant frames with SIFT descriptors (kornia; through ``pred``, a ``ctx.predictor()``, when given).
    Padding frames (zero response: the detector returns its top ``num_features`` otherwise) are dropped."""
    import torch
    from kornia.feature import get_laf_center

    net = covariant_net(num_features, response)
    x = torch.from_numpy(np.ascontiguousarray(gray, dtype=np.float32) / 255.0)[None, None]
    with torch.inference_mode():
        lafs, resp, d = pred(net, x) if pred is not None else net(x)
        keep = resp[0].abs() > 0
        lafs, d = lafs[:, keep], d[keep]
        xy = get_laf_center(lafs)[0]
    return Features(xy.numpy().astype(np.float32), d.numpy().astype(np.float32), lafs=lafs[0].numpy())


def opencv(gray: np.ndarray, kind: str) -> Features:
    import cv2

    img = np.clip(np.rint(gray), 0, 255).astype(np.uint8)
    if kind == "orb":
        kp, d = cv2.ORB_create(nfeatures=5000).detectAndCompute(img, None)
        return _pack(kp, d, True)
    sift = cv2.SIFT_create()
    if kind == "sift":
        kp, d = sift.detectAndCompute(img, None)
        return _pack(kp, d, False)
    if kind == "harris":
        pts = cv2.goodFeaturesToTrack(img, maxCorners=5000, qualityLevel=0.01, minDistance=3, useHarrisDetector=True)
        kp = [cv2.KeyPoint(float(x), float(y), 8.0) for x, y in (pts.reshape(-1, 2) if pts is not None else [])]
        kp, d = sift.compute(img, kp) if kp else ([], None)
        return _pack(kp, d, False)
    raise ValueError(kind)


def _pack(kp, d, binary: bool) -> Features:
    xy = np.array([k.pt for k in kp], np.float32).reshape(-1, 2)
    if d is None:
        d = np.zeros((0, 32 if binary else 128), np.uint8 if binary else np.float32)
    return Features(xy, d, binary)


def extract(gray: np.ndarray, kind: str, num_features: int = 8000, response: str = "dog", pred=None) -> Features:
    return covariant(gray, num_features, response, pred) if kind == "covariant" else opencv(gray, kind)


def match(f1: Features, f2: Features, ratio: float = 0.91, threshold: float = 2.0, confidence: float = 0.999):
    """Brute-force k = 2 (L2, Hamming for ORB), ratio d1/d2 < ``ratio``, then GC-RANSAC on F
    (``cv2.USAC_ACCURATE``). Returns (p1, p2) of the tentative matches and the inlier mask."""
    import cv2

    empty = (np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32), np.zeros(0, bool))
    if len(f1.xy) < 2 or len(f2.xy) < 2:
        return empty
    bf = cv2.BFMatcher(cv2.NORM_HAMMING if f1.binary else cv2.NORM_L2)
    pairs = bf.knnMatch(f1.desc, f2.desc, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < ratio * p[1].distance]
    if len(good) < 8:
        return (*empty[:2], np.zeros(0, bool)) if not good else (
            f1.xy[[g.queryIdx for g in good]], f2.xy[[g.trainIdx for g in good]], np.zeros(len(good), bool))
    p1 = f1.xy[[g.queryIdx for g in good]].astype(np.float64)
    p2 = f2.xy[[g.trainIdx for g in good]].astype(np.float64)
    _, inl = cv2.findFundamentalMat(p1, p2, cv2.USAC_ACCURATE, ransacReprojThreshold=threshold,
                                    confidence=confidence)
    inl = np.zeros(len(good), bool) if inl is None else inl.ravel().astype(bool)
    return p1, p2, inl


def transfer_error(h: np.ndarray, p1: np.ndarray, p2: np.ndarray) -> np.ndarray:
    """‖H·p1 − p2‖ in pixels (the fixture's true homography)."""
    if len(p1) == 0:
        return np.zeros(0)
    q = np.c_[p1, np.ones(len(p1))] @ h.T
    return np.linalg.norm(q[:, :2] / q[:, 2:3] - p2, axis=1)
