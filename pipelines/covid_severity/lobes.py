"""Lobe masks of a scan (card step 1): a label map per case from ``lobes.dir``, or the lungmask package's U-Net
with weights the user already has (``lobes.lungmask_checkpoint``, optionally fused with R231 as the paper's
LTRCLobes_R231). Never invented: without either source the manifest's ``data_paths`` stops the run with exit 4.

lungmask is used for its network class and its own pre- and post-processing (body crop, 256² resize, HU clip
−1024…600, connected-component clean-up, the fill-model fusion); its weights are loaded through
``training.load_state`` (``torch.load(weights_only=True)`` or safetensors), never by lungmask's own ``torch.load``,
and every forward pass goes through the run's predictor (the manifest's ``trainer:`` device and precision).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medrun.errors import DataError, EnvError


def root_path(root: Path, value: str | None) -> Path | None:
    if not value:
        return None
    p = Path(value).expanduser()
    return p if p.is_absolute() else Path(root) / p


def lobe_file(folder: Path, case: str) -> Path:
    """``<case>.nii.gz`` (or ``.nii``) in the lobe folder; a DataError naming what is missing."""
    for name in (f"{case}.nii.gz", f"{case}.nii"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"no lobe mask for case {case} in {folder} (looked for {case}.nii.gz)",
                    fix="write one label map (0–5) per case named <PatientID>.nii.gz, or use lobes.lungmask_checkpoint")


def _unet(state: dict, path, want: int | None = None):
    try:
        from lungmask.resunet import UNet
    except ImportError:
        raise EnvError("lobes.lungmask_checkpoint needs the lungmask package, which is not installed",
                       fix="pip install lungmask, or set lobes.dir to a folder of lobe NIfTIs") from None
    n_classes = int(list(state.values())[-1].shape[0])
    if want is not None and n_classes != want:
        raise DataError(f"{path} predicts {n_classes} classes, not the 5 lobes and background",
                        fix="lobes.lungmask_checkpoint takes lungmask's LTRCLobes weights; R231 goes in "
                            "lobes.lungmask_fill_checkpoint")
    net = UNet(n_classes=n_classes, padding=True, depth=5, up_mode="upsample", batch_norm=True, residual=False)
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise DataError(f"the lungmask checkpoint does not fit lungmask's U-Net: {str(e).splitlines()[0][:160]}",
                        fix="give lungmask's LTRCLobes (and R231) weights") from None
    return net.eval()


def networks(m) -> dict:
    """The lungmask U-Nets of the manifest (``{"lobes": net, "fill": net or None}``), weights loaded safely; empty
    when the lobes come from a folder."""
    from medrun.pipelines import training

    if m.lobes.dir or not m.lobes.lungmask_checkpoint:
        return {}
    path = Path(m.lobes.lungmask_checkpoint).expanduser()
    nets = {"lobes": _unet(training.load_state(path), path, want=6), "fill": None}
    if m.lobes.lungmask_fill_checkpoint:
        fill = Path(m.lobes.lungmask_fill_checkpoint).expanduser()
        if not fill.is_file():
            raise EnvError(f"lungmask fill checkpoint not found: {fill} (lobes.lungmask_fill_checkpoint)",
                           fix="give the R231 weights file you have, or leave it null for LTRCLobes alone")
        nets["fill"] = _unet(training.load_state(fill), fill)
    return nets


def lungmask_lobes(hu: np.ndarray, nets: dict, predictor, batch_size: int = 20) -> np.ndarray:
    """lungmask's inference on one volume (Z, H, W in HU, rows anterior→posterior, columns right→left, as lungmask
    expects), with each batch through ``predictor``; with a fill model, its lungs relabelled by the lobe model's
    neighbouring labels (lungmask's LTRCLobes_R231 fusion)."""
    import torch
    from lungmask import utils

    def infer(net) -> np.ndarray:
        vol, boxes = utils.preprocess(hu, resolution=[256, 256])
        vol = (np.minimum(vol, 600) + 1024) / 1624
        out = []
        for i in range(0, len(vol), batch_size):
            x = torch.as_tensor(np.asarray(vol[i:i + batch_size])[:, None], dtype=torch.float32)
            out.append(predictor(net, x).argmax(1).numpy().astype(np.uint8))
        res = utils.postprocessing(np.concatenate(out), disable_tqdm=True)
        return np.asarray([utils.reshape_mask(res[i], boxes[i], hu.shape[1:]) for i in range(len(res))], np.uint8)

    lobes = infer(nets["lobes"])
    if nets.get("fill") is None:
        return lobes
    lungs = infer(nets["fill"])
    spare = int(lobes.max()) + 1
    lobes[(lobes == 0) & (lungs > 0)] = spare
    lobes[lungs == 0] = 0
    return np.asarray(utils.postprocessing(lobes, spare=[spare], disable_tqdm=True), np.uint8)
