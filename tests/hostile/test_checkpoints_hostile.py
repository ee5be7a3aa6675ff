"""Untrusted or malformed weight files: a non-tensor value, integer keys, NaN or all-inf weights and a pickle of
Python objects are refused with exit 2 naming the key (or saying why the file is not loaded), never a crash; a
failed checkpoint save leaves no partial temp file."""

from __future__ import annotations

import argparse
import errno
from pathlib import Path

import pytest
import torch

from medrun.errors import UsageError
from medrun.pipelines import training


@pytest.mark.parametrize(("state", "needles"), [
    ({"model.w": torch.zeros(2), "model.step": 3}, ("'model.step'", "int", "not a tensor")),
    ({0: torch.zeros(2)}, ("key 0", "not a parameter name")),
    ({"model.w": torch.full((4,), float("nan"))}, ("'model.w'", "4 NaN")),
    ({"model.w": torch.tensor([1.0, float("nan")])}, ("'model.w'", "1 NaN")),
    ({"model.w": torch.full((4,), float("inf"))}, ("'model.w'", "only infinite")),
    ({"model.w": {"nested": torch.zeros(2)}}, ("'model.w'", "dict")),
])
def test_malformed_state_dicts_are_refused_naming_the_key(state, needles, tmp_path):
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(UsageError) as err:
        training.load_state(path)
    assert err.value.exit_code == 2
    for n in needles:
        assert n in str(err.value), str(err.value)


def test_a_minus_inf_mask_beside_finite_values_loads(tmp_path):
    torch.save({"mask": torch.tensor([0.0, float("-inf")])}, tmp_path / "ok.pt")
    assert set(training.load_state(tmp_path / "ok.pt")) == {"mask"}


def test_a_pickle_of_objects_is_refused_without_torchs_advice(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2), "args": argparse.Namespace(lr=1)}, path)
    with pytest.raises(UsageError) as err:
        training.load_state(path)
    text = str(err.value)
    assert "objects other than tensors" in text and "will not be loaded" in text and "safetensors" in text
    assert "weights_only" not in text


@pytest.mark.parametrize("kind", ["nan", "pickle"])
def test_eval_with_a_hostile_checkpoint_exits_2(kind, tmp_path, medrun_proc, one_line_error):
    """The real weights of a trained run, one tensor turned to NaN (a diverged training) or saved with a pickled
    object beside them."""
    from safetensors.torch import load_file
    from test_replace_guard import trained_run

    _, run = trained_run()  # reused when another hostile module trained it
    state = load_file(str(run / "checkpoints" / "model.safetensors"))
    key = next(k for k, v in state.items() if v.is_floating_point())
    if kind == "nan":
        state[key] = torch.full_like(state[key], float("nan"))
    else:
        state["args"] = argparse.Namespace(lr=1)
    path = tmp_path / f"{kind}.pt"
    torch.save(state, path)
    proc = medrun_proc("eval", "ad-lite", "--dataset", "oasis", "--fixture", "-o", "dataset.img_size=32",
                       "--checkpoint", path, env={"MEDRUN_RUNS": str(tmp_path / "runs")})
    line = one_line_error(proc, 2, str(path))
    assert f"'{key}'" in line if kind == "nan" else "objects other than tensors" in line
    assert "weights_only" not in proc.stderr
    assert not list((tmp_path / "runs").glob("*/*/MANIFEST.sha256"))


def test_a_failed_checkpoint_save_leaves_no_temp_file(tmp_path, monkeypatch):
    """torch.save reports a failed write as a RuntimeError; the save turns it back into the OSError (errno and the
    file) and removes the partial temp file."""
    def torch_save_on_full_disk(obj, f):
        f.write(b"partial")
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed") from None

    monkeypatch.setattr(torch, "save", torch_save_on_full_disk)
    (tmp_path / "last.ckpt").write_bytes(b"previous")
    with pytest.raises(OSError) as err:
        training.AtomicCheckpointIO().save_checkpoint({"w": torch.zeros(1)}, tmp_path / "last.ckpt")
    assert err.value.errno == errno.ENOSPC and Path(err.value.filename).name == ".last.ckpt.tmp"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    assert (tmp_path / "last.ckpt").read_bytes() == b"previous"
