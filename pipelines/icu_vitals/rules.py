"""Keyword, distance and colour rules that map OCR words to vitals (card, "Vital rules"; keyword lists from the
authors' ``monitorProcessing.py`` as the card gives them, plus 'pr'/'pulse'/'bpm' for HR, ours).

A word is (text, 4-point polygon, confidence, colour). The distance between two words is the shortest distance
between their outlines (0 when they overlap). Numbers are assigned exclusively, in this order: BP ('/' token, then
BP keywords, then MAP in parentheses or beside 'map', then the 3 mutually closest numbers), HR, SpO2, RR; each takes
the nearest unclaimed number to its keyword, so one number never serves two vitals (ours; the card is silent).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

HR_WORDS = ("hr", "pr", "pulse", "bpm")
SPO2_WORDS = ("spo2", "sp02", "spo", "sp0", "sao2", "spo²")
RR_WORDS = ("rr", "resp", "rpm", "awrr")
BP_WORDS = ("sys", "dia", "mmhg", "nibp", "nbp", "5y5", "5u5", "winhg", "abp", "art")
MAP_WORDS = ("map", "mean")
_INT = re.compile(r"^\(?(\d{1,3})\)?$")
_SLASH = re.compile(r"^(\d{2,3})\s*/\s*(\d{2,3})$")


@dataclass
class Word:
    text: str
    poly: np.ndarray  # (4, 2)
    conf: float = 1.0
    hue: float = float("nan")  # dominant HSV hue of the text pixels, 0–1
    sat: float = 0.0
    used: bool = field(default=False, compare=False)

    @property
    def height(self) -> float:
        return float(self.poly[:, 1].max() - self.poly[:, 1].min())

    @property
    def top(self) -> float:
        return float(self.poly[:, 1].min())

    @property
    def clean(self) -> str:
        return self.text.strip().lower().replace(" ", "")

    def integer(self) -> int | None:
        m = _INT.match(self.text.strip())
        return int(m.group(1)) if m else None

    @property
    def parenthesised(self) -> bool:
        t = self.text.strip()
        return t.startswith("(") and t.endswith(")") and self.integer() is not None


def _seg_point(p, a, b) -> float:
    ab, ap = b - a, p - a
    t = np.clip(np.dot(ap, ab) / max(np.dot(ab, ab), 1e-12), 0.0, 1.0)
    return float(np.linalg.norm(p - (a + t * ab)))


def _inside(p, poly) -> bool:
    import cv2

    return cv2.pointPolygonTest(poly.astype(np.float32).reshape(-1, 1, 2), (float(p[0]), float(p[1])), False) >= 0


def box_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Shortest distance between two quadrilateral outlines; 0 when one holds a vertex of the other. (Two segments
    that do not cross are closest at an endpoint, so vertex-to-edge distances suffice.)"""
    if any(_inside(p, b) for p in a) or any(_inside(p, a) for p in b):
        return 0.0
    best = np.inf
    for p, q in ((a, b), (b, a)):
        for v in p:
            for i in range(4):
                best = min(best, _seg_point(v, q[i], q[(i + 1) % 4]))
    return float(best)


def _is_keyword(w: Word, words: tuple[str, ...]) -> bool:
    t = re.sub(r"[^a-z0-9²%]", "", w.clean)
    return any(t == k or (len(k) > 2 and t.startswith(k)) for k in words)


def _nearest(key: Word, cands: list[Word]) -> Word | None:
    free = [c for c in cands if not c.used]
    return min(free, key=lambda c: box_distance(key.poly, c.poly)) if free else None


def extract_vitals(words: list[Word], *, rel_height: float = 0.3, green_hue=(0.2, 0.47)) -> dict:
    """{HR, SpO2, RR, SBP, DBP, MAP} (ints or None) from OCR words."""
    for w in words:
        w.used = False
    numeric = [w for w in words if w.integer() is not None or _SLASH.match(w.text.strip())]
    tallest = max((w.height for w in numeric), default=0.0)
    numeric = [w for w in numeric if tallest == 0 or w.height / tallest > rel_height]
    ints = [w for w in numeric if w.integer() is not None]
    out: dict[str, int | None] = dict.fromkeys(("HR", "SpO2", "RR", "SBP", "DBP", "MAP"))

    def take(w: Word | None) -> int | None:
        if w is None:
            return None
        w.used = True
        return w.integer()

    # -- BP ------------------------------------------------------------------------------------------------------
    bp_keys = [w for w in words if _is_keyword(w, BP_WORDS)]
    slashes = [w for w in numeric if _SLASH.match(w.text.strip())]
    if slashes:
        pick = (min(slashes, key=lambda s: min(box_distance(k.poly, s.poly) for k in bp_keys)) if bp_keys
                else max(slashes, key=lambda s: s.height))
        m = _SLASH.match(pick.text.strip())
        out["SBP"], out["DBP"] = int(m.group(1)), int(m.group(2))
        pick.used = True
    elif bp_keys:
        for k in ("SBP", "DBP"):
            out[k] = take(_nearest(bp_keys[0], [w for w in ints if not w.parenthesised]))
    paren = [w for w in ints if w.parenthesised and not w.used]
    map_keys = [w for w in words if _is_keyword(w, MAP_WORDS)]
    if paren:
        ref = next((w for w in numeric if w.used), None)
        out["MAP"] = take(min(paren, key=lambda p: box_distance(ref.poly, p.poly)) if ref else paren[0])
    elif map_keys:
        out["MAP"] = take(_nearest(map_keys[0], ints))

    # -- HR, SpO2, RR ----------------------------------------------------------------------------------------------
    def by_keyword(keys, accept=lambda v: True):
        for key in [w for w in words if _is_keyword(w, keys)]:
            cands = [w for w in ints if not w.parenthesised and accept(w.integer())]
            hit = _nearest(key, cands)
            if hit is not None:
                return take(hit)
        return None

    out["HR"] = by_keyword(HR_WORDS)
    if out["HR"] is None:
        green = [w for w in ints if not w.used and not w.parenthesised and green_hue[0] <= w.hue <= green_hue[1]
                 and w.sat > 0.3]
        free = [w for w in ints if not w.used and not w.parenthesised]
        out["HR"] = take(max(green, key=lambda w: w.height) if green else
                         (min(free, key=lambda w: w.top) if free else None))
    out["SpO2"] = by_keyword(SPO2_WORDS, lambda v: v >= 50)
    out["RR"] = by_keyword(RR_WORDS, lambda v: v <= 50)
    if out["RR"] is None:
        small = [w for w in ints if not w.used and not w.parenthesised and w.integer() < 45]
        out["RR"] = take(max(small, key=lambda w: w.height) if small else None)

    # -- BP last resort: the 3 mutually closest free numbers, sorted SBP > MAP > DBP ---------------------------------
    if out["SBP"] is None:
        free = [w for w in ints if not w.used]
        if len(free) >= 3:
            trio = min(combinations(free, 3),
                       key=lambda t: sum(box_distance(a.poly, b.poly) for a, b in combinations(t, 2)))
            vals = sorted((w.integer() for w in trio), reverse=True)
            out["SBP"], out["MAP"], out["DBP"] = vals
            for w in trio:
                w.used = True
    return sanity(out)


def sanity(v: dict) -> dict:
    """The code's checks: swap SBP/DBP when inverted; MAP := (SBP + 2·DBP)/3 when it is missing or off by > 13."""
    if v["SBP"] is not None and v["DBP"] is not None:
        if v["SBP"] < v["DBP"]:
            v["SBP"], v["DBP"] = v["DBP"], v["SBP"]
        est = (v["SBP"] + 2 * v["DBP"]) / 3
        if v["MAP"] is None or abs(v["MAP"] - est) > 13:
            v["MAP"] = int(round(est))
    return v
