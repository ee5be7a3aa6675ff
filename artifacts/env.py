"""The environment a run ran in: python, torch, CUDA/cuDNN, devices, CPU, OS, every installed package."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata


def capture_env() -> dict:
    env = {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "os": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "packages": dict(
            sorted({(d.metadata["Name"] or "").lower(): d.version for d in metadata.distributions()}.items())
        ),
    }
    if "torch" in sys.modules:
        import torch

        env["torch"] = torch.__version__
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        env["torch_threads"] = torch.get_num_threads()
        env["gpus"] = (
            [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            if torch.cuda.is_available()
            else []
        )
    return env
