"""Inference on the manifest's hardware: one predictor for every ``eval`` and ``predict``.

Training runs through Lightning's Trainer, which reads the manifest's ``trainer:`` section (accelerator, devices,
precision). Inference used to be hand-written loops that never left the CPU or float32; this module runs them
through Lightning Fabric built from the same section, so ``medrun eval … --accelerator gpu --precision
bf16-mixed`` evaluates on the GPU under bf16 autocast, and ``32-true`` on the CPU gives exactly the numbers a plain
``net(x)`` gives. Inference uses one device (a list of devices: its first one).

For volumes, ``sliding_window`` is MONAI's ``SlidingWindowInferer`` configured from the manifest's ``inference:``
section (``roi_size``, ``sw_batch_size``, ``overlap``, ``mode``), with the network call going through Fabric.

Usage in a stage::

    pred = self.ctx.predictor()
    net = pred.setup(self.trained_model())
    probs = torch.cat([torch.softmax(pred(net, x), 1) for x, _ in loader])    # on the CPU, float32
    mask = pred.sliding_window(net, volume)                                    # (1, C, D, H, W) in, logits out
    weights = pred.sliding_window(Forward(net, "fusion_weights"), volume)      # another entry point of the net
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


class Predictor:
    def __init__(self, accelerator: str = "auto", devices: Any = "auto", precision: str = "32-true",
                 sliding: dict | None = None, track: Callable | None = None):
        from lightning.fabric import Fabric

        first = devices[0] if isinstance(devices, list) and devices else None
        self.fabric = Fabric(accelerator=accelerator, devices=[first] if first is not None else 1,
                             precision=precision, strategy="auto")
        self.sliding = dict(sliding or {})
        self.track = track  # StageContext.track: progress of map() (a rich bar on a terminal, else plain lines)

    @classmethod
    def from_manifest(cls, m, track: Callable | None = None, **inference) -> Predictor:
        t = m.trainer
        section = getattr(m, "inference", None)
        sliding = {**(section.model_dump() if section is not None else {}), **inference}
        return cls(t.accelerator, t.devices, t.precision, sliding, track)

    @property
    def device(self) -> torch.device:
        return self.fabric.device

    def setup(self, net: torch.nn.Module) -> torch.nn.Module:
        """The network on the inference device, in eval mode, wrapped so that calls run under the precision."""
        if hasattr(net, "_forward_module"):  # already set up
            return net
        return self.fabric.setup_module(net.eval(), move_to_device=True)

    @torch.no_grad()
    def __call__(self, net: torch.nn.Module, *inputs, **kw):
        """``net(*inputs)`` on the device under the precision; the output (any nesting of tensors) back on the CPU
        as float32 (Fabric converts outputs to the default dtype)."""
        net = self.setup(net)
        out = net(*self.fabric.to_device(inputs), **self.fabric.to_device(kw))
        return _to_cpu(out)

    def map(self, net: torch.nn.Module, batches: Iterable, fn: Callable | None = None) -> list:
        """``fn(net, batch)`` (default ``net(batch[0])`` for ``(x, y)`` batches, else ``net(batch)``) over the
        batches, each result on the CPU, with progress when the stage's context made this predictor."""
        net = self.setup(net)
        out = []
        if self.track is not None:
            batches = self.track(batches, "predicting")
        with torch.no_grad():
            for batch in batches:
                if fn is None:
                    x = batch[0] if isinstance(batch, (tuple, list)) else batch
                    out.append(self(net, x))
                else:
                    out.append(_to_cpu(fn(net, self.fabric.to_device(batch))))
        return out

    @torch.no_grad()
    def sliding_window(self, net: torch.nn.Module, image: torch.Tensor, **overrides) -> torch.Tensor:
        """MONAI sliding-window inference over a (B, C, *spatial) tensor with the manifest's ``inference:``
        settings; windows run on the device under the precision, the stitched output is on the CPU."""
        from monai.inferers import SlidingWindowInferer

        cfg = {**self.sliding, **overrides}
        roi = cfg.get("roi_size")
        if not roi:
            from medrun.errors import UsageError

            raise UsageError("sliding-window inference needs inference.roi_size",
                             fix="set inference.roi_size in the manifest (e.g. [96, 96, 96])")
        inferer = SlidingWindowInferer(roi_size=roi, sw_batch_size=cfg.get("sw_batch_size", 1),
                                       overlap=cfg.get("overlap", 0.25), mode=cfg.get("mode", "gaussian"),
                                       sw_device=self.device, device=torch.device("cpu"))
        net = self.setup(net)
        return _to_cpu(inferer(image, lambda x: net(x)))


class Forward(torch.nn.Module):
    """A network's other entry point as a module's ``forward``, so the predictor runs it on its device under its
    precision (calling ``net.method`` on a set-up network would bypass the autocast): ``fn`` is a method name of
    ``net`` or a function ``fn(net, *inputs)``. ``pred.sliding_window(Forward(net, "semantic"), volume)``,
    ``pred(Forward(net, text_logits), x, text_embeddings)``."""

    def __init__(self, net: torch.nn.Module, fn: str | Callable):
        super().__init__()
        self.net, self.fn = net, fn

    def forward(self, *inputs, **kw):
        fn = getattr(self.net, self.fn) if isinstance(self.fn, str) else lambda *a, **k: self.fn(self.net, *a, **k)
        return fn(*inputs, **kw)


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu()
        return obj.float() if obj.is_floating_point() and obj.dtype != torch.float64 else obj
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj
