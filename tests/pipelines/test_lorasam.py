"""lorasam: the card's trainable counts through `medrun show`, frozen weights, learning on the CholecSeg8k fixture
(stage A box pre-training + LoRA with text prompts) with eval/predict on the run, the base-checkpoint check, and
the issue's bad input through the CLI."""

import json
from pathlib import Path

import pytest
import torch

FIXTURE = Path(__file__).parents[2] / "manifests" / "lorasam" / "cholecseg8k.fixture.yaml"
SMALL = ["-o", "pretrain.epochs=30", "-o", "train.epochs=40"]  # the learning check: shorter than the smoke run


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small models on a shared 2-core machine run many times faster on one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize(("r", "expected"), [(2, 672_000), (4, 974_080), (8, 1_578_240), (16, 2_786_560)])
def test_model_summary_reports_the_card_counts(cli, r, expected):
    res = cli("show", "lorasam", "--dataset", "endovis17", "--model-summary", "--json", "-o", f"model.rank={r}")
    assert res.code == 0, res.err
    assert res.json()["params_trainable"] == expected


def test_frozen_weights_do_not_change_after_a_training_step():
    from medrun.models.sam import Sam
    from medrun.models.sam_lora import LoraSam
    from medrun.pipelines.lorasam.pipeline import text_logits

    torch.manual_seed(0)
    from medrun.pipelines.lorasam.pipeline import sam_config

    model = LoraSam(Sam(sam_config("tiny", 64)), r=4)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    logits = text_logits(model, torch.randn(2, 3, 64, 64), torch.randn(3, 512))
    assert logits.shape == (2, 3, 64, 64)
    torch.nn.functional.binary_cross_entropy_with_logits(logits, (torch.rand_like(logits) > 0.5).float()).backward()
    opt.step()
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], v) for n, v in frozen.items())
    assert any(not torch.equal(params[n], v) for n, v in before.items() if "lora_A" in n or "tal" in n)


@pytest.mark.slow
def test_learns_on_fixture_then_eval_predict_and_base_check(cli, runs, tmp_path):
    """Stage A + stage B (30 + 40 epochs): Dice over present pairs on the held-out video well above stage A's
    zero-shot with text (the smoke run, 80 + 100 epochs, must reach 0.6 and +0.3)."""
    from safetensors import safe_open

    from medrun.artifacts import sha256_file

    r = cli("train", "lorasam", "--dataset", "cholecseg8k", "--fixture", "--runs-dir", runs, *SMALL, "--json")
    assert r.code == 0, r.err
    out = r.json()
    m = out["metrics"]
    assert m["dice_present"] >= 0.5 and m["dice_gain"] >= 0.2 and m["loss_drop"] > 0, m
    assert m["params_trainable"] == 64_960 and m["base_kind"] == "pretrain"
    run = Path(out["run_dir"])
    info = json.loads((run / "run.json").read_text())
    assert info["text_tower_is_clip"] is False and "stand-in" in info["text_tower"]
    paper = (run / "paper.md").read_text()
    assert "Table 3" in paper and "stand-in text tower" in paper and "| liver |" in paper
    for f in ("per_case.csv", "figures/overlay_liver.png", "figures/learning_curves.png",
              "checkpoints/base.safetensors", "checkpoints/text_embeddings.safetensors", "MANIFEST.sha256"):
        assert (run / f).exists(), f
    # only the trainable weights (+ the TAL BatchNorm statistics), with the base's sha256
    with safe_open(str(run / "checkpoints" / "model.safetensors"), "pt") as f:
        meta, keys = f.metadata(), list(f.keys())
        n = sum(f.get_tensor(k).numel() for k in keys if "running" not in k and "num_batches" not in k)
    base_sha = sha256_file(run / "checkpoints" / "base.safetensors")
    assert n == 64_960 and meta["base_sha256"] == base_sha == info["base_sha256"]
    assert not any("patch_embed" in k or "rel_pos" in k for k in keys)

    ev = cli("eval", "lorasam", "--dataset", "cholecseg8k", "--fixture", "--runs-dir", runs, *SMALL, "--split", "test",
             "--json")
    assert ev.code == 0, ev.err
    em = ev.json()["metrics"]
    assert em["dice"] == pytest.approx(m["dice"]) and em["dice_liver"] == pytest.approx(m["dice_liver"])
    assert "liver" in ev.err and "class-mean Dice" in ev.err  # printed per class
    ev_run = Path(ev.json()["run_dir"])
    assert (ev_run / "figures" / "overlay_grasper.png").exists() and "Table 3" in (ev_run / "paper.md").read_text()

    from medrun.datasets import cholecseg8k
    from medrun.pipelines.runner import fixture_root

    image = cholecseg8k.read(fixture_root("cholecseg8k"))[-1].image  # a held-out frame
    pr = cli("predict", "lorasam", "--dataset", "cholecseg8k", "--fixture", "--runs-dir", runs, *SMALL,
             "-o", f"predict.input={image}", "-o", "predict.classes=[liver, gallbladder]", "--json")
    assert pr.code == 0, pr.err
    pr_run = Path(pr.json()["run_dir"])
    masks = sorted(p.name for p in (pr_run / "predictions").iterdir())
    assert masks == [f"{image.stem}_gallbladder.png", f"{image.stem}_liver.png"]
    from PIL import Image

    assert Image.open(pr_run / "predictions" / masks[0]).size == (96, 64)  # the input's own size
    assert (pr_run / "figures" / f"overlay_{image.stem}.png").exists()

    bad = cli("predict", "lorasam", "--dataset", "cholecseg8k", "--fixture", "--runs-dir", runs, *SMALL,
              "-o", "predict.classes=[livr]")
    assert bad.code == 2 and "unknown class name" in bad.err and "'liver'" in bad.err and "Traceback" not in bad.err

    # a different base is refused
    from medrun.models.sam import Sam
    from medrun.pipelines.lorasam.pipeline import sam_config

    other = tmp_path / "other_base.pth"
    torch.save(Sam(sam_config("tiny", 64)).state_dict(), other)
    ref = cli("eval", "lorasam", "--dataset", "cholecseg8k", "--fixture", "--runs-dir", runs, *SMALL,
              "--run", out["run_id"], "-o", f"model.sam_checkpoint={other}")
    assert ref.code == 2 and "refusing to evaluate on a different base" in ref.err and "other_base.pth" in ref.err


def _fixture_copy(tmp_path):
    from medrun.datasets import get

    return get("cholecseg8k").make_fixture(tmp_path / "data", 0)


def _train(cli, runs, root, *extra):
    return cli("train", "lorasam", "--manifest", FIXTURE, "--data-dir", root, "--runs-dir", runs,
               "-o", "pretrain.epochs=1", "-o", "train.epochs=1", *extra)


def _not_complete(runs):
    return not list(Path(runs).glob("lorasam/*/MANIFEST.sha256"))


def test_missing_cholecseg8k_mask_fails_before_anything_is_written(cli, runs, tmp_path):
    root = _fixture_copy(tmp_path)
    gone = root / "video01" / "video01_00080" / "frame_82_endo_color_mask.png"
    gone.unlink()
    r = _train(cli, runs, root)
    assert r.code == 3 and str(gone) in r.err and "Traceback" not in r.err
    assert not runs.exists()


def test_mixed_image_sizes(cli, runs, tmp_path):
    import numpy as np
    from PIL import Image

    root = _fixture_copy(tmp_path)
    odd = root / "video09" / "video09_00160" / "frame_161_endo.png"
    Image.fromarray(np.zeros((70, 100, 3), np.uint8)).save(odd)
    r = _train(cli, runs, root)
    assert r.code == 3 and "frame_161_endo.png is 100×70" in r.err and "Traceback" not in r.err
    assert _not_complete(runs)


def test_class_name_not_in_the_dataset(cli, runs, tmp_path):
    r = _train(cli, runs, _fixture_copy(tmp_path), "-o", "dataset.classes=[liver, spleen]")
    assert r.code == 2 and "unknown class name" in r.err and "spleen" in r.err and "Traceback" not in r.err
    assert _not_complete(runs)


def test_wrong_variant_and_corrupt_sam_checkpoints(cli, runs, tmp_path):
    root = _fixture_copy(tmp_path)
    vit_l = tmp_path / "sam_vit_l_0b3195.pth"  # shapes of a ViT-L file, tiny tensors
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(1024, 3, 1, 1),
                "image_encoder.blocks.23.norm1.weight": torch.zeros(1)}, vit_l)
    r = _train(cli, runs, root, "-o", f"model.sam_checkpoint={vit_l}")
    assert r.code == 2 and "sam_vit_l_0b3195.pth" in r.err and "vit_l" in r.err and "Traceback" not in r.err
    corrupt = tmp_path / "sam_vit_b_01ec64.pth"
    corrupt.write_bytes(b"\x80\x02 this is not a checkpoint")
    r = _train(cli, runs, root, "-o", f"model.sam_checkpoint={corrupt}")
    assert r.code == 3 and "sam_vit_b_01ec64.pth" in r.err and "corrupt" in r.err and "Traceback" not in r.err
    assert _not_complete(runs)


def test_the_best_validation_epoch_is_kept_through_a_model_checkpoint(cli, runs, tmp_path):
    """With a validation video, Lightning's ModelCheckpoint on val_dice picks the epoch; its weights are the run's."""
    import csv

    from safetensors.torch import load_file

    r = _train(cli, runs, _fixture_copy(tmp_path), "-o", "train.epochs=3", "-o",
               "dataset.split={train: [video01], val: [video09], test: [video12]}", "--json")
    assert r.code == 0, r.err
    run, m = Path(r.json()["run_dir"]), r.json()["metrics"]
    with open(run / "logs" / "metrics.csv") as f:
        val = [float(row["val_dice"]) for row in csv.DictReader(f) if row.get("val_dice")]
    assert len(val) == 3 and m["best_val_dice"] == pytest.approx(max(val))
    best = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    saved = load_file(str(run / "checkpoints" / "model.safetensors"))
    assert saved and all(torch.equal(v, best[f"net.{k}"]) for k, v in saved.items())


def test_with_a_sam_checkpoint_only_trainable_weights_are_stored(cli, runs, tmp_path):
    """The real-data path: an official-layout SAM file as the base. The run stores no base weights, records the
    file's sha256, and eval needs that same file."""
    from safetensors import safe_open

    from medrun.artifacts import sha256_file
    from medrun.models.sam import Sam
    from medrun.pipelines.lorasam.pipeline import sam_config

    root = _fixture_copy(tmp_path)
    base = tmp_path / "sam_tiny.pth"
    torch.save({"model": Sam(sam_config("tiny", 64)).state_dict()}, base)
    r = _train(cli, runs, root, "-o", f"model.sam_checkpoint={base}", "--json")
    assert r.code == 0, r.err
    run = Path(r.json()["run_dir"])
    assert not (run / "checkpoints" / "base.safetensors").exists() and r.json()["metrics"]["base_kind"] == "checkpoint"
    with safe_open(str(run / "checkpoints" / "model.safetensors"), "pt") as f:
        assert f.metadata()["base_sha256"] == sha256_file(base)
        assert sum(f.get_tensor(k).numel() for k in f.keys() if "running" not in k and "num_batches" not in k) == 64_960
    ev = cli("eval", "lorasam", "--manifest", FIXTURE, "--data-dir", root, "--runs-dir", runs,
             "-o", "pretrain.epochs=1", "-o", "train.epochs=1", "-o", f"model.sam_checkpoint={base}", "--json")
    assert ev.code == 0, ev.err
    assert ev.json()["metrics"]["dice"] == pytest.approx(r.json()["metrics"]["dice"])
