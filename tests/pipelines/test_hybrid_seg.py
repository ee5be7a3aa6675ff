"""hybrid-seg: HybridNet at full size with every fusion mode, post-processing against MONAI's HoVer-Net reference,
the loss weights, per-image metrics, metadata vectors, learning on the PanNuke fixture, the deployment, adaptation,
explanation and generator stages on a trained run, and bad input through the CLI."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from medrun.models.hybridnet import FUSIONS, HybridNet, SwinHeads, hybridnet_tiny
from medrun.pipelines.hybrid_seg import method as M
from medrun.pipelines.hybrid_seg.pipeline import tiles

POST = SimpleNamespace(np_threshold=0.5, marker_threshold=0.4, min_size=10, smooth_sigma=1.0)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def n_params(net):
    return sum(p.numel() for p in net.parameters())


def test_hybridnet_full_size_matches_the_card():
    """3×256² in: S1 32@256 … S4 256@32, 16×16 = 256 tokens of d 256, heads at full resolution."""
    net = HybridNet().eval()
    assert n_params(net) == 8_735_018
    seen = {}
    hooks = [getattr(net, n).register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, tuple(o.shape)))
             for n in ("stem", "enc2", "enc3", "enc4", "to_tokens")]
    with torch.no_grad():
        out = net(torch.zeros(1, 3, 256, 256))
    for h in hooks:
        h.remove()
    assert seen == {"stem": (1, 32, 256, 256), "enc2": (1, 64, 128, 128), "enc3": (1, 128, 64, 64),
                    "enc4": (1, 256, 32, 32), "to_tokens": (1, 256, 16, 16)}
    assert {k: tuple(v.shape) for k, v in out.items()} == {"np": (1, 2, 256, 256), "hv": (1, 2, 256, 256),
                                                           "nc": (1, 6, 256, 256)}
    layer = net.blocks[0]
    assert [type(getattr(layer.attn, k)).__name__ for k in "qkvo"] == ["Linear"] * 4 and layer.fc1.out_features == 1024
    assert n_params(HybridNet(bottleneck="cnn")) == 7_936_810  # the CNN-only ablation
    swin = SwinHeads()
    assert n_params(swin) == 6_303_100
    assert swin(torch.zeros(1, 3, 64, 64))["nc"].shape == (1, 6, 64, 64)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_every_fusion_mode_runs_and_uses_the_metadata(fusion):
    torch.manual_seed(0)
    net = hybridnet_tiny(fusion=fusion, meta_dim=19 if fusion != "none" else 0, meta_embed=16).eval()
    x = torch.randn(2, 3, 64, 64)
    meta = torch.zeros(2, 19)
    meta[0, 3], meta[1, 5] = 1, 1
    out = net(x, meta if fusion != "none" else None)
    loss = sum(v.float().mean() for v in out.values())
    loss.backward()
    assert all(torch.isfinite(v).all() for v in out.values())
    if fusion != "none":
        assert net.meta_mlp[0].weight.grad.abs().sum() > 0
        other = net(x, meta.flip(0))["np"]
        assert not torch.allclose(other, out["np"])  # the metadata changes the output
    expected = {"none": 0, "input": 3, "film": 0, "token": 0, "gated": 0}[fusion]
    assert net.stem[0].in_channels == 3 + expected


def test_post_processing_separates_touching_nuclei_like_monai():
    from monai.apps.pathology.transforms.post.array import HoVerNetInstanceMapPostProcessing

    from medrun.metrics.instance import panoptic_quality

    yy, xx = np.mgrid[:64, :64]
    gt = np.zeros((64, 64), np.int32)
    for i, (cy, cx, r) in enumerate([(20, 20, 8), (20, 35, 8), (45, 40, 7), (47, 15, 5)], 1):
        gt[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (gt == 0)] = i
    hv = M.hv_maps(gt)
    ours = M.instances((gt > 0).astype(np.float32), hv, POST)
    assert len(np.unique(ours)) - 1 == 4 and panoptic_quality(ours, gt)["pq"] > 0.85
    logits = np.log(np.stack([(gt == 0), (gt > 0)]).astype(np.float32) + 1e-3)
    _, ref = HoVerNetInstanceMapPostProcessing(activation="softmax", min_object_size=10)(logits, hv)
    ref = np.asarray(ref)[0]
    assert len(np.unique(ref)) - 1 == 4 and panoptic_quality(ours, ref)["pq"] > 0.85


def test_loss_is_monai_hovernet_with_the_cards_weights():
    from medrun.pipelines.hybrid_seg.config import Loss

    loss = M.make_loss(Loss())
    assert (loss.lambda_hv_mse, loss.lambda_hv_mse_grad, loss.lambda_np_ce, loss.lambda_nc_dice) == (1, 2, 1, 1)
    inst = np.zeros((32, 32), np.int64)
    inst[4:12, 4:12], inst[16:26, 10:20] = 1, 2
    types = (inst > 0) * 3
    y = {"np": torch.nn.functional.one_hot(torch.from_numpy(inst > 0).long(), 2).permute(2, 0, 1)[None].float(),
         "hv": torch.from_numpy(M.hv_maps(inst))[None],
         "nc": torch.nn.functional.one_hot(torch.from_numpy(types).long(), 6).permute(2, 0, 1)[None].float()}
    perfect = {"np": y["np"] * 40 - 20, "hv": y["hv"], "nc": y["nc"] * 40 - 20}
    worse = {**perfect, "hv": torch.zeros_like(y["hv"])}
    assert M.make_loss(Loss())(M.monai_keys(perfect), M.monai_keys(y)) < 1e-3
    assert M.make_loss(Loss())(M.monai_keys(worse), M.monai_keys(y)) > 0.1


def test_image_metrics_perfect_and_empty():
    inst = np.zeros((32, 32), np.int32)
    inst[2:8, 2:8], inst[10:20, 10:20] = 1, 2
    types = np.where(inst == 1, 2, np.where(inst == 2, 5, 0)).astype(np.uint8)
    perfect = {"inst": inst, "types": {1: 2, 2: 5}, "scores": {1: 0.9, 2: 0.8}, "type_map": types}
    r = M.image_metrics(perfect, inst, types)
    assert r["np_dice"] == r["bpq"] == r["mpq"] == r["aji"] == r["ap50"] == r["boundary_f1"] == 1.0
    assert r["hd95"] == 0 and r["iou_epithelial"] == 1.0 and np.isnan(r["dice_dead"])
    shifted = {**perfect, "inst": np.roll(inst, 3, axis=1), "type_map": np.roll(types, 3, axis=1)}
    r = M.image_metrics(shifted, inst, types)
    assert r["hd95"] == pytest.approx(3.0) and 0 < r["boundary_f1"] < 1 and r["bpq"] < 1
    empty = {"inst": np.zeros_like(inst), "types": {}, "scores": {}, "type_map": np.zeros_like(types)}
    r = M.image_metrics(empty, inst, types)
    assert r["bpq"] == 0 and r["np_dice"] == 0 and r["aji"] == 0


def test_metadata_vectors_impute_and_flag(tmp_path):
    csv = tmp_path / "metadata.csv"
    csv.write_text("image_id,age,sex\na,40,F\nb,,M\nc,60,\n")
    table = M.read_metadata(csv)
    assert table["numeric"] == {"age": (50.0, 10.0)} and table["categorical"] == {"sex": ["F", "M", "unknown"]}
    v = M.metadata_vectors(["Breast", "Colon", "Skin"], ["a", "b", "c"], table, ("Breast", "Colon", "Skin"))
    assert v.tolist() == [[1, 0, 0, -1, 0, 1, 0, 0], [0, 1, 0, 0, 1, 0, 1, 0], [0, 0, 1, 1, 0, 0, 0, 1]]


def test_tiles_cover_the_image_with_the_overlap():
    assert tiles(1000, 256, 64) == [0, 192, 384, 576, 744]
    assert tiles(128, 64, 16) == [0, 48, 64] and tiles(64, 64, 16) == [0]


@pytest.mark.slow
def test_learns_on_pannuke_fixture_then_eval_and_predict(cli, runs):
    """The card's smoke check on a shorter run (3 epochs × 6 passes over the 12 fold-1 patches, batch 2): NP Dice
    > 0.7 and bPQ > 0.3 on fold 3 (an empty prediction scores 0)."""
    args = ["--dataset", "pannuke", "--fixture", "--runs-dir", runs, "-o", "train.repeats=6", "-o", "eval.overlays=1"]
    r = cli("train", "hybrid-seg", *args, "--json")
    assert r.code == 0, r.err
    out = r.json()
    m = out["metrics"]
    assert m["np_dice"] > 0.7 and m["bpq"] > 0.3, m
    assert m["params_total"] == 450_066 and m["n_images"] == 12 and 0 <= m["mpq"] <= 1
    run = runs / "hybrid-seg" / f"train-{out['run_id'][:12]}"
    for f in ("per_case.csv", "paper.md", "checkpoints/model.safetensors", "checkpoints/best.ckpt",
              "figures/learning_curves.png", "MANIFEST.sha256"):
        assert (run / f).exists(), f
    assert len(list((run / "figures").glob("overlay_*.png"))) == 1
    paper = (run / "paper.md").read_text()
    assert "| bpq |" in paper and "0.66" in paper and "generated fixture" in paper
    lock = json.loads((run / "data.lock.json").read_text())["splits"]
    assert sorted(lock["test"]) == sorted("Fold 3/images/fold3/images.npy#" + str(i) for i in range(12))

    ev = cli("eval", "hybrid-seg", *args, "--json")
    assert ev.code == 0 and ev.json()["metrics"]["bpq"] == m["bpq"], ev.err
    pred = cli("predict", "hybrid-seg", *args, "--json")
    assert pred.code == 0, pred.err
    pdir = runs / "hybrid-seg" / f"predict-{pred.json()['run_id'][:12]}"
    from PIL import Image

    inst = np.asarray(Image.open(pdir / "predictions" / "fold3_0000_inst.png"))
    assert inst.shape == (64, 64) and inst.max() > 0 and (pdir / "figures/predictions/fold3_0000_overlay.png").exists()
    assert pred.json()["metrics"]["nuclei"] > 0
    # explanations of the trained model (the card's smoke item): finite maps, IG insertion AUC > deletion AUC
    ex = cli("explain", "hybrid-seg", *args, "-o", "explain.images=1", "-o", "explain.ig_steps=8",
             "-o", "explain.instances=1", "--json")
    assert ex.code == 0, ex.err
    e = ex.json()["metrics"]
    assert e["ig_finite"] == e["gradcampp_finite"] == e["instance_maps_finite"] == 1.0
    assert e["ig_insertion_auc"] > e["ig_deletion_auc"] and e["pointing_game"] >= 0


def test_pannuke_fold_with_other_mask_count_fails_cleanly(cli, runs, tmp_path):
    from medrun.datasets import pannuke

    root = pannuke.fixture(tmp_path, 0, n=4, size=32)
    bad = pannuke.fold_files(root, 2)["masks"]
    np.save(bad, np.load(bad)[:2])
    r = cli("train", "hybrid-seg", "--dataset", "pannuke", "--data-dir", root, "--runs-dir", runs)
    assert r.code == 3 and str(bad) in r.err and "holds 2 masks but images.npy holds 4" in r.err
    assert "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1
    (run,) = (runs / "hybrid-seg").iterdir()
    assert not (run / "MANIFEST.sha256").exists() and json.loads((run / "run.json").read_text())["status"] == "failed"


def test_wrong_folder_and_bad_manifest_values(cli, runs, tmp_path):
    from medrun.datasets import pannuke

    root = pannuke.fixture(tmp_path, 0, n=2, size=32)
    r = cli("train", "hybrid-seg", "--dataset", "pannuke", "--data-dir", root.parent, "--runs-dir", runs)
    assert r.code == 3 and f"use {root} instead" in r.err and not runs.exists()
    r = cli("train", "hybrid-seg", "--dataset", "pannuke", "--fixture", "--runs-dir", runs, "-o", "dataset.tile=100")
    assert r.code == 2 and "multiple of 16" in r.err and not runs.exists()
    r = cli("train", "hybrid-seg", "--dataset", "pannuke", "--fixture", "--runs-dir", runs,
            "-o", "model.arch=cnn", "-o", "model.fusion=token")
    assert r.code == 2 and "transformer token" in r.err and not runs.exists()


@pytest.mark.slow
def test_stages_on_a_short_train_run(cli, runs):
    """The card's smoke items beyond train, at minimal sizes on a short run (1 epoch on 6 patches): ONNX matches
    onnxruntime, the int8 checkpoint is smaller than fp32, LoRA trains < 5 % of the weights, and a DDPM trains and
    returns correctly shaped pairs after 10 DDIM steps (explanations are checked on the learning test's trained run)."""
    base = ["hybrid-seg", "--dataset", "pannuke", "--fixture", "--runs-dir", runs, "-o", "train.repeats=4",
            "-o", "eval.overlays=0", "-o", "dataset.limit=6"]

    def run(stage, *over):
        r = cli(stage, *base, *[f"-o{o}" for o in over], "--json")
        assert r.code == 0, (stage, r.err[-2000:])
        return r.json()["metrics"]

    over = ("train.epochs=1",)
    run("train", *over)
    onnx = run("export-onnx", *over)
    assert onnx["matches"] == 1.0 and onnx["max_abs_diff"] < 1e-3
    comp = run("compress", *over, "compress.prune=[0.3]", "compress.finetune_epochs=0")
    assert comp["int8_smaller"] == 1.0 and comp["int8-dynamic_size_mb"] < comp["fp32_size_mb"]
    assert 0.25 < comp["pruned30_sparsity"] < 0.35
    lora = run("adapt", *over, "adapt.steps=2")
    assert lora["trainable_fraction"] < 0.05 and lora["domain_gap_swd"] > 0 and 0 <= lora["bpq"] <= 1
    gen = run("gen-train", *over, "gen.epochs=2", "gen.samples=2")
    assert gen["loss_last"] < gen["loss_first"] * 1.5 and gen["params_total"] > 0
    samples = run("generate", *over, "gen.epochs=2", "gen.samples=2")
    assert samples["pairs"] == 2 and samples["shapes_ok"] == 1.0 and samples["steps"] == 10
