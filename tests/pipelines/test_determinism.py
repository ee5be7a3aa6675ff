"""Determinism levels: seeded runs repeat their random augmentations exactly (also inside DataLoader worker
processes), yet the augmentations differ from epoch to epoch and from seed to seed; strict turns on deterministic
kernels."""

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from medrun.pipelines.training import apply_determinism


class RandomFlipNoise(Dataset):
    """An 'augmentation' drawn from torch's RNG in whichever process loads the item."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return torch.full((1,), float(i)) + torch.rand(1), torch.tensor(i)


class Recorder(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: dict[int, list[float]] = {}

    def training_step(self, batch, batch_idx):
        x, _ = batch
        self.seen.setdefault(self.current_epoch, []).extend(x.flatten().tolist())
        return (self.w * x).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _augmentations(seed: int, workers: int, tmp_path) -> dict[int, list[float]]:
    apply_determinism("seeded", seed)
    module = Recorder()
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, DataLoader(RandomFlipNoise(), batch_size=4, shuffle=True, num_workers=workers,
                                   persistent_workers=False))
    return module.seen


def test_augmentations_repeat_per_seed_and_differ_per_epoch(tmp_path):
    for workers in (0, 2):
        a = _augmentations(3, workers, tmp_path)
        b = _augmentations(3, workers, tmp_path)
        assert a == b, f"seeded run not reproducible with {workers} workers"
        assert a[0] != a[1], "augmentations repeat across epochs"
        assert sorted(int(v) for v in a[0]) == list(range(8))  # every item once per epoch
        assert _augmentations(4, workers, tmp_path) != a


def test_strict_enables_deterministic_kernels():
    try:
        apply_determinism("strict", 0)
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        assert not torch.backends.cudnn.benchmark
    finally:
        torch.use_deterministic_algorithms(False)


def test_weights_files_are_byte_identical_across_processes(tmp_path):
    """safetensors orders metadata per process; save_weights sorts it so that equal weights give equal files."""
    import hashlib
    import subprocess
    import sys

    from safetensors import safe_open

    code = ("import sys, torch; from medrun.pipelines.training import save_weights; torch.manual_seed(0); "
            "save_weights(torch.nn.Linear(3, 2), __import__('pathlib').Path(sys.argv[1]), "
            "{'pipeline': 'x', 'seed': 0, 'zeta': 'z', 'm': 4, 'a': 1})")
    # this process and one other (safetensors' metadata order is random per process: unsorted, two processes
    # disagree with probability 1 − 1/120 for these five keys)
    from medrun.pipelines.training import save_weights

    torch.manual_seed(0)
    save_weights(torch.nn.Linear(3, 2), tmp_path / "w0.safetensors", {"pipeline": "x", "seed": 0, "zeta": "z", "m": 4,
                                                                      "a": 1})
    out = tmp_path / "w1.safetensors"
    subprocess.run([sys.executable, "-c", code, str(out)], check=True)
    digests = {hashlib.sha256((tmp_path / f"w{i}.safetensors").read_bytes()).hexdigest() for i in (0, 1)}
    assert len(digests) == 1
    with safe_open(str(out), "pt") as f:
        assert f.metadata() == {"pipeline": "x", "seed": "0", "zeta": "z", "m": "4", "a": "1"}
        assert sorted(f.keys()) == ["bias", "weight"]
