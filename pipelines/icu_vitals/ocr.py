"""OCR engines for the icu-vitals chain, the ``train-ocr`` stage (tiny CRNN + CTC on synthetic crops) and the
``ocr-bench`` stage (Table 3: word exact match and seconds per image).

Engines (``extract.ocr``, ``eval.ocr``, ``ocr_bench.engines``):
- ``oracle``: the labelled word boxes (``boxes.csv``) mapped into the crop: tests the rules, not an OCR.
- ``crnn-tiny``: classical text detection (bright pixels inside the predicted screen, connected components grouped
  into words by height and gap) and ``models.crnn.CRNN`` recognition, trained here on synthetic crops.
- ``paddle`` / ``easyocr``: PaddleOCR (PP-OCR det + cls + rec) and EasyOCR, when the package is installed and
  its models are on disk (``extract.paddle_model_dir`` / ``extract.easyocr_model_dir``); nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import time
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch

from medrun.errors import DataError, EnvError

from .rules import Word

ALPHABET = "0123456789/()HRSpONIBP"
LABELS = ("HR", "SpO2", "RR", "NIBP")


# -- engine availability -----------------------------------------------------------------------------------------
def require(engine: str, cfg) -> None:
    """EnvError (exit 4) naming what is missing for ``engine``: its package or its model folder."""
    if engine == "paddle":
        if importlib.util.find_spec("paddleocr") is None:
            raise EnvError("OCR engine 'paddle' needs the paddleocr package, which is not installed",
                           fix="pip install paddlepaddle paddleocr, put the PP-OCR det/, rec/ and cls/ inference "
                               "models in a folder and set -o extract.paddle_model_dir=DIR, "
                               "or use -o extract.ocr=crnn-tiny")
        d = Path(cfg.paddle_model_dir).expanduser() if cfg.paddle_model_dir else None
        missing = [s for s in ("det", "rec", "cls") if d is None or not (d / s).is_dir()]
        if missing:
            raise EnvError(f"PaddleOCR models not found: {d if d else 'extract.paddle_model_dir is not set'} lacks "
                           f"{', '.join(f'{s}/' for s in missing)}",
                           fix="download the PP-OCR det, rec and cls inference models and set "
                               "-o extract.paddle_model_dir=DIR (nothing is downloaded)")
    elif engine == "easyocr":
        if importlib.util.find_spec("easyocr") is None:
            raise EnvError("OCR engine 'easyocr' needs the easyocr package, which is not installed",
                           fix="pip install easyocr, put craft_mlt_25k.pth and english_g2.pth in a folder and set "
                               "-o extract.easyocr_model_dir=DIR, or use -o extract.ocr=crnn-tiny")
        d = Path(cfg.easyocr_model_dir).expanduser() if cfg.easyocr_model_dir else None
        missing = [f for f in ("craft_mlt_25k.pth", "english_g2.pth") if d is None or not (d / f).is_file()]
        if missing:
            raise EnvError(f"EasyOCR models not found: {d if d else 'extract.easyocr_model_dir is not set'} lacks "
                           f"{', '.join(missing)}", fix="copy the EasyOCR model files there and set "
                                                        "-o extract.easyocr_model_dir=DIR (nothing is downloaded)")


# -- text crops ----------------------------------------------------------------------------------------------------
def normalise(crop: np.ndarray, height: int = 32, width: int = 128) -> np.ndarray:
    """An RGB word crop → (1, height, width) float32: its brightness (HSV value, the channel the detector thresholds),
    resized to ``height`` keeping its aspect (squeezed to ``width`` when longer), stretched so the background
    (5th percentile) is 0 and the brightest pixel 1, padded on the right with 0 (background).

    Why one stretched channel: monitor words come in every hue and brightness; from RGB in [0, 1] the CRNN first had
    to learn colour and contrast invariance, and its CTC loss stayed on the all-blank plateau for the whole CPU
    budget. From this input it reads the fixture's detected words after a few hundred steps."""
    import cv2

    h, w = crop.shape[:2]
    v = crop.max(axis=2).astype(np.float32)
    nw = max(1, min(width, int(round(w * height / max(h, 1)))))
    img = cv2.resize(v, (nw, height), interpolation=cv2.INTER_AREA if h > height else cv2.INTER_LINEAR)
    lo, hi = float(np.percentile(img, 5)), float(img.max())
    img = np.clip((img - lo) / max(hi - lo, 1.0), 0.0, 1.0)
    if nw < width:
        img = np.pad(img, ((0, 0), (0, width - nw)))
    return np.ascontiguousarray(img[None], dtype=np.float32)


def synth_text(rng) -> str:
    r = rng.random()
    if r < 0.35:
        return str(int(rng.integers(0, 251)))
    if r < 0.55:
        return f"{int(rng.integers(60, 230))}/{int(rng.integers(30, 140))}"
    if r < 0.7:
        return f"({int(rng.integers(40, 180))})"
    return LABELS[int(rng.integers(len(LABELS)))]


def synth_crop(rng, text: str) -> np.ndarray:
    """``text`` rendered like a monitor word seen through the photo chain: a bright colour on a dark screen, at a
    small size, slightly rotated and sheared, blurred, JPEG-compressed, then cropped loosely around it."""
    import colorsys

    import cv2
    from PIL import Image, ImageDraw

    from medrun.datasets.icu_monitors import font

    size = int(rng.integers(9, 34))
    f = font(size)
    bg = rng.uniform(5, 50)
    canvas = Image.new("RGB", (size * (len(text) + 4), size * 3), tuple(int(bg + rng.uniform(-4, 4)) for _ in range(3)))
    d = ImageDraw.Draw(canvas)
    colour = tuple(int(255 * c)
                   for c in colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.75, 1.0)))
    d.text((size, size), text, fill=colour, font=f)
    x0, y0, x1, y1 = d.textbbox((size, size), text, font=f)
    img = np.asarray(canvas).astype(np.float32)
    src = np.float32([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    dst = src + rng.normal(0, 0.03, (4, 2)).astype(np.float32) * (y1 - y0)
    a = np.deg2rad(rng.uniform(-4, 4))
    c = dst.mean(0)
    dst = (dst - c) @ np.float32([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]).T + c
    mat = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
    img = cv2.warpPerspective(img, mat, canvas.size, borderMode=cv2.BORDER_REPLICATE)
    img = np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    if rng.random() < 0.7:
        ok, jpeg = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(70, 96))])
        img = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[..., ::-1]
    pad = lambda: int(rng.integers(0, max(2, size // 4)))  # noqa: E731
    box = cv2.perspectiveTransform(src.reshape(-1, 1, 2), mat).reshape(-1, 2)
    bx0, by0 = np.floor(box.min(0)).astype(int)
    bx1, by1 = np.ceil(box.max(0)).astype(int)
    crop = img[max(0, by0 - pad()):by1 + pad() + 1, max(0, bx0 - pad()):bx1 + pad() + 1]
    scale = rng.uniform(1.0, 4.0)  # the chain upsamples the screen crop
    if scale > 1.2:
        crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    return crop


def word_crop(image: np.ndarray, poly, height: int = 32) -> np.ndarray:
    """A labelled word polygon rectified to an upright crop ``height`` px high (ocr-bench's input)."""
    import cv2

    poly = np.float32(poly)
    w = max(np.linalg.norm(poly[1] - poly[0]), np.linalg.norm(poly[2] - poly[3]))
    h = max(np.linalg.norm(poly[3] - poly[0]), np.linalg.norm(poly[2] - poly[1]), 1.0)
    pad = 0.15 * h
    out_w, out_h = int(round((w + 2 * pad) * height / (h + 2 * pad))), height
    dst = np.float32([[pad, pad], [w + pad, pad], [w + pad, h + pad], [pad, h + pad]]) * (out_h / (h + 2 * pad))
    mat = cv2.getPerspectiveTransform(poly, dst)
    return cv2.warpPerspective(image, mat, (max(out_w, 4), out_h), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)


# -- classical text detection (the crnn-tiny engine) -----------------------------------------------------------------
def detect_words(crop: np.ndarray, region: np.ndarray | None = None,
                 exclude: np.ndarray | None = None) -> list[np.ndarray]:
    """Axis-aligned word boxes (4, 2) of bright text on a dark screen: Otsu threshold (at least 80) of the HSV value
    inside ``region`` (the screen), minus ``exclude`` (the ECG trace); connected components grouped into words when
    their heights differ by < 1.6× and they overlap vertically and lie within 0.6 × height of each other."""
    import cv2

    v = crop.max(axis=2)
    inside = np.ones(v.shape, bool) if region is None else region
    vals = v[inside]
    if vals.size == 0:
        return []
    thr, _ = cv2.threshold(vals.reshape(-1, 1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = (v > max(80.0, thr)) & inside
    if exclude is not None:
        mask &= ~exclude
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    comps = [s for s in stats[1:] if s[3] >= 4 and s[4] >= 6 and s[2] < 0.5 * crop.shape[1]]
    boxes = [[float(x), float(y), float(x + w), float(y + h)] for x, y, w, h, _ in comps]
    parent = list(range(len(boxes)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            a, b = boxes[i], boxes[j]
            ha, hb = a[3] - a[1], b[3] - b[1]
            overlap = min(a[3], b[3]) - max(a[1], b[1])
            gap = max(a[0], b[0]) - min(a[2], b[2])
            big = max(ha, hb)
            if (max(ha, hb) / max(min(ha, hb), 1) < 1.6 or min(ha, hb) < 0.3 * big) and \
                    overlap > 0.5 * min(ha, hb) and gap < 0.6 * big:
                parent[find(i)] = find(j)
    groups: dict[int, list] = {}
    for i, b in enumerate(boxes):
        groups.setdefault(find(i), []).append(b)
    merged = []
    for g in groups.values():
        x0, y0 = min(b[0] for b in g), min(b[1] for b in g)
        x1, y1 = max(b[2] for b in g), max(b[3] for b in g)
        if (x1 - x0) < 0.5 * crop.shape[1] and (y1 - y0) >= 6:
            merged.append((x0, y0, x1, y1))
    # a box inside another (a bracket's broken stroke inside its word) is part of that word
    kept = [a for a in merged if not any(b != a and b[0] <= a[0] and b[1] <= a[1] and b[2] >= a[2] and b[3] >= a[3]
                                         for b in merged)]
    return [np.float32([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]) for x0, y0, x1, y1 in kept]


def colour_of(crop: np.ndarray, poly: np.ndarray) -> tuple[float, float]:
    """Median HSV hue (0–1) and saturation of the bright pixels inside a word box (skimage ``rgb2hsv``)."""
    from skimage.color import rgb2hsv

    x0, y0 = np.floor(poly.min(0)).astype(int).clip(0)
    x1, y1 = np.ceil(poly.max(0)).astype(int)
    patch = crop[y0:y1 + 1, x0:x1 + 1]
    if patch.size == 0:
        return float("nan"), 0.0
    hsv = rgb2hsv(patch).reshape(-1, 3)
    bright = hsv[hsv[:, 2] > 0.5]
    if len(bright) == 0:
        return float("nan"), 0.0
    return float(np.median(bright[:, 0])), float(np.median(bright[:, 1]))


# -- engines -----------------------------------------------------------------------------------------------------------
class Engine(ABC):
    """An OCR engine reads the words of a screen crop; engines that recognise text (all but the oracle, which only
    replays the labelled boxes) also have ``recognise(crops) -> texts``, which ocr-bench and train-ocr use."""

    name = "engine"

    @abstractmethod
    def read(self, crop: np.ndarray, *, region=None, exclude=None, oracle=None) -> list[Word]:
        """The words found in ``crop`` (boxes in crop pixels)."""

    def _words(self, crop, hits) -> list[Word]:
        words = []
        for poly, text, conf in hits:
            poly = np.float32(poly).reshape(4, 2)
            hue, sat = colour_of(crop, poly)
            words.append(Word(str(text), poly, float(conf), hue, sat))
        return words


class Oracle(Engine):
    name = "oracle"

    def read(self, crop, *, region=None, exclude=None, oracle=None):
        if oracle is None:
            raise DataError("OCR engine 'oracle' needs the labelled word boxes (boxes.csv beside images/)",
                            fix="use -o extract.ocr=crnn-tiny (or paddle/easyocr), or add boxes.csv")
        h, w = crop.shape[:2]
        hits = [(p, t, 1.0) for t, p in oracle if 0 <= p[:, 0].mean() < w and 0 <= p[:, 1].mean() < h]
        return self._words(crop, hits)


class CrnnTiny(Engine):
    name = "crnn-tiny"

    def __init__(self, net, predictor, height: int = 32, width: int = 128, batch: int = 128):
        self.net, self.pred, self.height, self.width, self.batch = net, predictor, height, width, batch

    def recognise(self, crops):
        from medrun.models.crnn import decode

        out = []
        for i in range(0, len(crops), self.batch):
            x = torch.from_numpy(np.stack([normalise(c, self.height, self.width) for c in crops[i:i + self.batch]]))
            out += decode(self.pred(self.net, x), ALPHABET)
        return out

    def read(self, crop, *, region=None, exclude=None, oracle=None):
        polys = detect_words(crop, region, exclude)
        crops = []
        for p in polys:
            x0, y0 = p.min(0).astype(int)
            x1, y1 = p.max(0).astype(int)
            m = max(1, int(0.12 * (y1 - y0)))
            crops.append(crop[max(0, y0 - m):y1 + m + 1, max(0, x0 - m):x1 + m + 1])
        texts = self.recognise(crops) if crops else []
        return self._words(crop, [(p, t, 1.0) for p, t in zip(polys, texts, strict=True)])


class Paddle(Engine):  # pragma: no cover - needs paddleocr and its models
    name = "paddle"

    def __init__(self, model_dir: str):
        from paddleocr import PaddleOCR

        d = Path(model_dir).expanduser()
        self.ocr = PaddleOCR(det_model_dir=str(d / "det"), rec_model_dir=str(d / "rec"), cls_model_dir=str(d / "cls"),
                             use_angle_cls=True, lang="en", show_log=False)

    def read(self, crop, *, region=None, exclude=None, oracle=None):
        res = self.ocr.ocr(crop[..., ::-1].copy(), cls=True) or [[]]
        return self._words(crop, [(poly, text, conf) for poly, (text, conf) in (res[0] or [])])

    def recognise(self, crops):
        return [(self.ocr.ocr(c[..., ::-1].copy(), det=False, cls=True) or [[("", 0)]])[0][0][0] for c in crops]


class EasyOcr(Engine):  # pragma: no cover - needs easyocr and its models
    name = "easyocr"

    def __init__(self, model_dir: str, gpu: bool = False):
        import easyocr

        self.reader = easyocr.Reader(["en"], gpu=gpu, model_storage_directory=str(Path(model_dir).expanduser()),
                                     download_enabled=False, verbose=False)

    def read(self, crop, *, region=None, exclude=None, oracle=None):
        return self._words(crop, [(poly, text, conf) for poly, text, conf in self.reader.readtext(crop)])

    def recognise(self, crops):
        return [" ".join(t for _, t, _ in self.reader.recognize(c)) for c in crops]


def build(engine: str, pipe) -> Engine:
    """The engine object for a stage (``pipe``: the pipeline, for the predictor and the crnn-tiny weights)."""
    cfg = pipe.m.extract
    require(engine, cfg)
    if engine == "oracle":
        return Oracle()
    if engine == "paddle":
        return Paddle(cfg.paddle_model_dir)
    if engine == "easyocr":
        return EasyOcr(cfg.easyocr_model_dir)
    t = pipe.m.train_ocr
    return CrnnTiny(pipe.crnn(), pipe.predictor, t.height, t.width)


# -- train-ocr ---------------------------------------------------------------------------------------------------------
def build_crnn(t) -> torch.nn.Module:
    """One input channel (``normalise``) and 8× fewer time steps than pixels (``models.crnn``): both are what let
    the CTC loss leave its plateau within the ~2 CPU-minutes the card allows."""
    from medrun.models.crnn import CRNN

    return CRNN(len(ALPHABET), t.height, widths=(16, 32, 64), hidden=t.hidden, in_channels=1, time_stride=8)


def synth_set(n: int, seed: int, t) -> tuple[torch.Tensor, list[str]]:
    rng = np.random.default_rng(seed)
    texts = [synth_text(rng) for _ in range(n)]
    x = np.stack([normalise(synth_crop(rng, s), t.height, t.width) for s in texts])
    return torch.from_numpy(x), texts


class CropSet(torch.utils.data.Dataset):
    def __init__(self, x, texts):
        self.x, self.texts = x, texts

    def __len__(self):
        return len(self.texts)

    def __getitem__(self, i):
        return self.x[i], self.texts[i]


def collate(batch):
    x = torch.stack([b[0] for b in batch])
    return x, [b[1] for b in batch]


def lit_crnn(net, t, steps: int):
    import lightning as L

    class LitCRNN(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = net
            self.ctc = torch.nn.CTCLoss(blank=0, zero_infinity=True)

        def loss(self, x, texts):
            lp = self.net(x)
            targets = torch.tensor([ALPHABET.index(c) + 1 for s in texts for c in s], dtype=torch.long)
            lengths = torch.tensor([len(s) for s in texts], dtype=torch.long)
            return self.ctc(lp, targets, torch.full((x.shape[0],), lp.shape[0], dtype=torch.long), lengths)

        def training_step(self, batch, _):
            loss = self.loss(*batch)
            self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(batch[1]))
            return loss

        def validation_step(self, batch, _):
            from medrun.models.crnn import decode

            x, texts = batch
            lp = self.net(x)
            acc = float(np.mean([a == b for a, b in zip(decode(lp, ALPHABET), texts, strict=True)]))
            self.log("val_word_acc", acc, on_epoch=True, batch_size=len(texts))

        def configure_optimizers(self):
            opt = torch.optim.Adam(self.net.parameters(), lr=t.lr)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=t.lr, total_steps=max(steps, 1), pct_start=0.15)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    return LitCRNN()


def train_ocr(pipe) -> dict:
    """``medrun train-ocr``: the crnn-tiny recogniser trained with CTC on synthetic crops; scored on held-out
    synthetic crops and, when the dataset has boxes.csv, on its labelled words. The synthetic crops are rendered
    like the classical detector's crops of the fixture (bright text on a dark screen, loose box, upsampled), checked
    by eye side by side; the fixture's recipe (2000 crops × 7 epochs, batch 32, Adam 3e-3) takes ~45 s."""
    from torch.utils.data import DataLoader

    from .. import training
    from ..report import paper_md

    t, ctx = pipe.m.train_ocr, pipe.ctx
    t0 = time.perf_counter()
    x, texts = synth_set(t.samples, t.seed, t)
    vx, vtexts = synth_set(t.val_samples, t.seed + 1, t)
    ctx.log(f"synthetic crops: {t.samples} train, {t.val_samples} val ({time.perf_counter() - t0:.1f} s)")
    net = build_crnn(t)
    steps = t.epochs * -(-t.samples // t.batch_size)
    module = lit_crnn(net, t, steps)
    loader = training.ResumableLoader(CropSet(x, texts), t.batch_size, pipe.m.seed, collate_fn=collate)
    val = DataLoader(CropSet(vx, vtexts), batch_size=256, collate_fn=collate)
    trainer = training.make_trainer(ctx, t.epochs)
    t1 = time.perf_counter()
    training.fit(trainer, module, train_dataloaders=loader, val_dataloaders=val,
                 ckpt_path=training.resume_checkpoint(ctx.run))
    secs = time.perf_counter() - t1
    net = module.net.eval()
    training.save_weights(net, ctx.path / "checkpoints" / "model.safetensors",
                          {"pipeline": ctx.spec.slug, "engine": "crnn-tiny", "alphabet": ALPHABET})
    ctx.learning_curves()
    engine = CrnnTiny(net, pipe.predictor, t.height, t.width)
    metrics = {"word_acc_synthetic": _acc(_decode_all(engine, vx), vtexts),
               "train_seconds": round(secs, 1), **training.count_params(net)}
    rows = []
    words = pipe.labelled_words()
    if words:
        crops = [w[2] for w in words]
        got = engine.recognise(crops)
        rows = [{"image": w[0], "text": w[1], "read": g, "correct": int(g == w[1])}
                for w, g in zip(words, got, strict=True)]
        metrics["word_acc_dataset"] = float(np.mean([r["correct"] for r in rows]))
        hr = [r for r in rows if r["text"].isdigit() and int(r["text"]) >= 50]
        metrics["word_acc_dataset_numbers"] = float(np.mean([r["correct"] for r in hr])) if hr else float("nan")
        ctx.write_csv("per_case.csv", rows)
    ctx.log("crnn-tiny: " + "  ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k.startswith("word_acc")))
    ctx.write_text("paper.md", paper_md(ctx.spec, pipe.m, metrics, ctx, expect={}, keys=list(metrics),
                                        title="ICU monitor vitals: crnn-tiny OCR (CTC)",
                                        sections=["The paper trains no OCR (it uses PP-OCR as released); crnn-tiny is "
                                                  "this project's offline stand-in, trained on synthetic crops only."]))
    return metrics


def _decode_all(engine: CrnnTiny, x: torch.Tensor) -> list[str]:
    from medrun.models.crnn import decode

    return [s for i in range(0, len(x), 256) for s in decode(engine.pred(engine.net, x[i:i + 256]), ALPHABET)]


def _acc(got, want) -> float:
    return float(np.mean([a == b for a, b in zip(got, want, strict=True)]))


# -- ocr-bench ---------------------------------------------------------------------------------------------------------
def ocr_bench(pipe) -> dict:
    """``medrun ocr-bench``: each engine reads every labelled word (rectified from its box) — correct, wrong,
    exact-match %, seconds per word and per image — beside the paper's Table 3."""
    from ..report import markdown_table, paper_md, paper_table

    ctx, engines = pipe.ctx, pipe.m.ocr_bench.engines
    for e in engines:
        require(e, pipe.m.extract)
    words = pipe.labelled_words()
    if not words:
        raise DataError(f"no labelled words: ocr-bench needs boxes.csv beside images/ in {pipe.root()}",
                        fix="write boxes.csv (image,text,x1,y1,…,x4,y4), or try --fixture")
    if pipe.m.ocr_bench.limit:
        words = words[:pipe.m.ocr_bench.limit]
    n_images = len({w[0] for w in words})
    metrics, rows, table = {"words": len(words), "images": n_images}, [], []
    for e in engines:
        engine = build(e, pipe)
        t0 = time.perf_counter()
        got = [w[1] for w in words] if e == "oracle" else engine.recognise([w[2] for w in words])
        secs = time.perf_counter() - t0
        correct = sum(g == w[1] for g, w in zip(got, words, strict=True))
        key = e.replace("-", "_")
        metrics.update({f"exact_{key}": correct / len(words), f"correct_{key}": correct,
                        f"wrong_{key}": len(words) - correct, f"secs_per_image_{key}": secs / n_images})
        rows += [{"engine": e, "image": w[0], "text": w[1], "read": g, "correct": int(g == w[1])}
                 for w, g in zip(words, got, strict=True)]
        table.append([e, correct, len(words) - correct, f"{100 * correct / len(words):.2f}", f"{secs / n_images:.4f}"])
    ctx.write_csv("per_case.csv", rows)
    ours = markdown_table(["engine", "correct", "wrong", "exact %", "s / image (this machine)"], table)
    ctx.write_text("paper.md", paper_md(ctx.spec, pipe.m, metrics, ctx, expect={}, keys=list(metrics),
                                        title="ICU monitor vitals: OCR benchmark (Table 3)", sections=[
        f"## This run: {len(words)} labelled words from {n_images} photos\n\n{ours}",
        paper_table(ctx.spec, "table3")]))
    return metrics
