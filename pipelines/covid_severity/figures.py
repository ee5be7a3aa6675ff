"""Figures a reader of the paper looks for: per-lobe severity overlays (Fig. 2/5), the removal steps on one
slice (Fig. 3/4), and the agreement plots of ``eval`` (the scatter of scores, coverage over α, Fig. 6's fairness
bars). All through the run's ``ctx.figure`` writer."""

from __future__ import annotations

import math

import numpy as np

LOBE_NAMES = {1: "LUL", 2: "LLL", 3: "RUL", 4: "RML", 5: "RLL"}
LOBE_COLOURS = {1: (0.2, 0.6, 1.0), 2: (0.1, 0.3, 0.8), 3: (1.0, 0.8, 0.2), 4: (0.9, 0.5, 0.1), 5: (0.7, 0.3, 0.0)}


def _window(hu: np.ndarray) -> np.ndarray:
    """Lung window (level −600, width 1500) as 0–1 grey."""
    return np.clip((hu + 1350.0) / 1500.0, 0, 1)


def _rgb(hu2d: np.ndarray) -> np.ndarray:
    return np.repeat(_window(hu2d)[..., None], 3, axis=2)


def _tint(rgb: np.ndarray, mask: np.ndarray, colour, alpha: float) -> np.ndarray:
    if mask.any():
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * np.asarray(colour, float)
    return rgb


def _outline(mask: np.ndarray) -> np.ndarray:
    from scipy.ndimage import binary_erosion

    return mask & ~binary_erosion(mask)


def _montage(panels: list[list[np.ndarray]], lines: list[str], scale: int) -> np.ndarray:
    """Rows of RGB panels (0–1) side by side with a text header, as uint8 (PIL's default font)."""
    from PIL import Image, ImageDraw

    gap = 4
    big = lambda p: np.kron(p, np.ones((scale, scale, 1)))  # noqa: E731
    rows = [np.concatenate([np.pad(big(p), ((0, 0), (0, gap), (0, 0)), constant_values=1) for p in row],
                           axis=1)[:, :-gap] for row in panels]
    width = max(r.shape[1] for r in rows)
    body = np.concatenate([np.pad(r, ((0, gap), (0, width - r.shape[1]), (0, 0)), constant_values=1) for r in rows])
    head = Image.new("RGB", (width, 14 * len(lines) + 6), "white")
    draw = ImageDraw.Draw(head)
    for i, line in enumerate(lines):
        draw.text((4, 3 + 14 * i), line, fill="black")
    return np.concatenate([np.asarray(head), (body * 255).round().astype(np.uint8)])


def pick_slices(lobes: np.ndarray, n: int = 3) -> list[int]:
    """Slices at about 25, 50 and 75 % of the lung's craniocaudal extent."""
    has = np.nonzero(lobes.reshape(len(lobes), -1).any(1))[0]
    if len(has) == 0:
        return [len(lobes) // 2]
    return sorted({int(has[0] + round(f * (has[-1] - has[0]))) for f in np.linspace(0.25, 0.75, n)})


def overlay(ctx, name: str, case: str, hu, lobes, infection, grade: dict, annotation=None, ann_grade=None) -> None:
    """Three slices (25/50/75 % down the lungs) with each lobe tinted and outlined and the infection in red; with
    dataset annotations a second row colours ours green, theirs blue and both red (the paper's Fig. 5). The header
    gives each lobe's involvement and score, the CTSS and the severity. Composed with numpy and written as PNG
    (``figures/<name>.png``): fast enough for every scan of a real run."""
    zs = pick_slices(lobes)
    top, bottom = [], []
    for z in zs:
        rgb = _rgb(hu[z])
        for lab, colour in LOBE_COLOURS.items():
            _tint(rgb, lobes[z] == lab, colour, 0.18)
            _tint(rgb, _outline(lobes[z] == lab), colour, 0.9)
        top.append(_tint(rgb, infection[z], (1, 0, 0), 0.7))
        if annotation is not None:
            rgb = _rgb(hu[z])
            _tint(rgb, infection[z] & ~annotation[z], (0, 0.85, 0), 0.7)
            _tint(rgb, annotation[z] & ~infection[z], (0.1, 0.3, 1), 0.6)
            bottom.append(_tint(rgb, annotation[z] & infection[z], (1, 0, 0), 0.8))
    lines = [f"{case}: CTSS {grade['ctss']} ({grade['severity']}); slices {', '.join(map(str, zs))}",
             "  ".join(f"{LOBE_NAMES[i + 1]} {p:.1f}%->{s}" if math.isfinite(p) else f"{LOBE_NAMES[i + 1]} -"
                       for i, (p, s) in enumerate(zip(grade["involvement"], grade["scores"], strict=True)))]
    if ann_grade is not None:
        lines.append(f"row 2: ours green, annotations blue, both red; annotations give CTSS {ann_grade['ctss']} "
                     f"({ann_grade['severity']})")
    scale = max(1, 256 // hu.shape[-1])
    ctx.write_png(f"figures/{name}.png", _montage([top, bottom] if bottom else [top], lines, scale))


def steps(ctx, name: str, case: str, hu, stages: dict, infection, organ: dict) -> None:
    """The removal steps on one slice (the organ's onset slice when there is one, else the most infected): lung
    mask, pleura removed, organ rim removed, vessels, the HU window and the refined infection (Fig. 3/4)."""
    z = organ.get("organ_slice")
    if z is None:
        counts = infection.reshape(len(infection), -1).sum(1)
        z = int(np.argmax(counts)) if counts.any() else len(hu) // 2
    panels = [("1 lung", stages["lung"], (0.2, 0.8, 1.0)), ("2 pleura off", stages["pleura"], (0.2, 0.8, 1.0)),
              ("3 organ rim off", stages["organ"], (0.2, 0.8, 1.0)), ("4 vessels", stages["vessels"], (1, 0.1, 0.1)),
              ("5 HU window", stages["threshold"], (1, 0.1, 0.1)), ("6-7 refined", infection, (1, 0.1, 0.1))]
    row = [_tint(_rgb(hu[z]), mask[z], colour, 0.5) for _, mask, colour in panels]
    lines = [f"{case}, slice {z}" + (" (organ onset)" if organ.get("organ_slice") == z else ""),
             " | ".join(t for t, _, _ in panels[:3]) + " (blue: lung kept)",
             " | ".join(t for t, _, _ in panels[3:]) + " (red)"]
    scale = max(1, 256 // hu.shape[-1])
    ctx.write_png(f"figures/{name}.png", _montage([row[:3], row[3:]], lines, scale))


def scatter(ctx, name: str, truth, preds: dict) -> None:
    """Predicted against radiologist CTSS for each mask source, with the ±1 band."""
    with ctx.figure(name, figsize=(4.8, 4.4)) as (fig, ax):
        ax.fill_between([0, 25], [-1, 24], [1, 26], color="0.9", label="±1")
        ax.plot([0, 25], [0, 25], color="0.5", lw=0.8)
        rng = np.random.default_rng(0)
        for (label, pred), marker in zip(preds.items(), "os^", strict=False):
            jitter = rng.uniform(-0.15, 0.15, len(pred))
            ax.scatter(np.asarray(truth) + jitter, np.asarray(pred) + jitter, s=18, marker=marker, label=label,
                       alpha=0.8)
        ax.set_xlim(-0.5, 25.5)
        ax.set_ylim(-0.5, 25.5)
        ax.set_xlabel("radiologist CTSS")
        ax.set_ylabel("predicted CTSS")
        ax.legend(fontsize=7, loc="upper left")


def coverage_plot(ctx, name: str, curves: dict) -> None:
    """Coverage(α) for α = 0…5: this run's mask sources and the paper's Table 1 rows."""
    with ctx.figure(name, figsize=(4.8, 3.6)) as (fig, ax):
        for label, ys in curves.items():
            ax.plot(range(len(ys)), ys, marker="o", ls="--" if label.startswith("paper") else "-", label=label)
        ax.set_xlabel("α (CTSS points)")
        ax.set_ylabel("coverage")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7)


def fairness_plot(ctx, name: str, rows: list[dict], alphas: int) -> None:
    """The paper's Fig. 6: per row (by sex; female by age; male by age) the CTSS QWK bars, the coverage curves and
    the severity QWK bars."""
    groups = [[r for r in rows if r["age"] == "all"],
              [r for r in rows if r["sex"] == "F" and r["age"] != "all"],
              [r for r in rows if r["sex"] == "M" and r["age"] != "all"]]
    with ctx.figure(name, nrows=3, ncols=3, figsize=(12, 9.5)) as (fig, ax):
        for i, grp in enumerate(groups):
            labels = [r["sex"] if r["age"] == "all" else r["age"] for r in grp]
            for j, key in ((0, "qwk_ctss"), (2, "qwk_severity")):
                vals = [r[key] if isinstance(r[key], float) and math.isfinite(r[key]) else 0.0 for r in grp]
                ax[i, j].bar(range(len(grp)), vals, color="tab:blue" if j == 0 else "tab:orange")
                ax[i, j].set_xticks(range(len(grp)), labels, fontsize=7)
                ax[i, j].set_ylim(min(-0.5, *vals) if vals else -0.5, 1.05)
                ax[i, j].axhline(0, color="0.5", lw=0.6)
                ax[i, j].set_title(("CTSS QWK", "", "severity QWK")[j] + ("", " · female", " · male")[i], fontsize=8)
            for r, lab in zip(grp, labels, strict=True):
                ax[i, 1].plot(range(alphas), [r[f"coverage_a{a}"] for a in range(alphas)], marker=".",
                              label=f"{lab} (n={r['n']})")
            ax[i, 1].set_ylim(0, 1.02)
            ax[i, 1].set_title("coverage over α", fontsize=8)
            ax[i, 1].legend(fontsize=6)
