"""dense-unet-teachers: the network at full size, the self-attention against its formula, the fusion rule (Eq. 4, the
1 → 2 channel first convolution) and α (Eq. 5) exactly, learning on the fixture through the CLI (teachers, fusion,
eval, predict in the challenge's Analyze naming), leave-one-out, and bad input."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from medrun.models.dense_unet3d import DenseUNet3D, MHSA3d
from medrun.pipelines.dense_unet_teachers import fusion as FU


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def n_params(net):
    return sum(p.numel() for p in net.parameters())


def test_full_size_network_shapes_and_reported_parameter_count():
    """F=32, depth 3 (released config). The card forbids gating on the paper's 2.12 M / 2,331,160; the counts are
    reported: 1,820,260 with the attention up-blocks, 1,517,412 without (the card's hand count ≈ 1.52 M)."""
    teacher, plain = DenseUNet3D(1, 4, 32, 3), DenseUNet3D(1, 4, 32, 3, up_attention=False)
    print(f"\nparameters: {n_params(teacher):,} (attention up-blocks), {n_params(plain):,} (released decoder)")
    assert abs(n_params(plain) - 1.52e6) / 1.52e6 < 0.01 and abs(n_params(teacher) - 1.82e6) / 1.82e6 < 0.01
    fusion = DenseUNet3D(2, 4, 32, 3).eval()
    assert n_params(fusion) - n_params(teacher) == 32 * 27  # one more input channel of the first 3×3×3 conv
    x = torch.randn(1, 2, 16, 16, 16)
    feats = []
    hooks = [b.register_forward_hook(lambda m, i, o: feats.append(tuple(o.shape))) for b in fusion.enc]
    with torch.no_grad():
        out = fusion(x)
    for h in hooks:
        h.remove()
    assert feats == [(1, 32, 16, 16, 16), (1, 64, 8, 8, 8), (1, 128, 4, 4, 4)]
    assert out.shape == (1, 4, 16, 16, 16)
    with pytest.raises(ValueError, match="divisible by 4"):
        fusion(torch.randn(1, 2, 18, 16, 16))


@pytest.mark.parametrize("kind,heads", [("same", 2), ("up", 1)])
def test_self_attention_follows_eq_1_to_3(kind, heads):
    torch.manual_seed(0)
    m = MHSA3d(8, 8, 8, 6, heads, kind).eval()
    x = torch.randn(2, 8, 4, 4, 4)
    q, k, v = m.q(x), m.k(x), m.v(x)

    def tok(t):
        return t.reshape(2, heads, t.shape[1] // heads, -1).transpose(2, 3)

    a = torch.softmax(tok(q) @ tok(k).transpose(2, 3) / (8 / heads) ** 0.5, -1)
    ref = m.out((a @ tok(v)).transpose(2, 3).reshape(2, 8, *q.shape[2:]))
    out = m(x)
    assert torch.allclose(out, ref, atol=1e-5)
    assert out.shape == ((2, 6, 4, 4, 4) if kind == "same" else (2, 6, 8, 8, 8))


def test_fused_weights_are_eq4_exactly_on_a_toy_state_dict():
    g = torch.Generator().manual_seed(1)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    student = {"input_conv.weight": r(3, 2, 3, 3, 3), "bn.weight": r(3), "bn.bias": r(3), "out.bias": r(4)}
    t1 = {"input_conv.weight": r(3, 1, 3, 3, 3), "bn.weight": r(3), "bn.bias": r(3), "out.bias": r(4)}
    t2 = {"input_conv.weight": r(3, 1, 3, 3, 3), "bn.weight": r(3), "bn.bias": r(3), "out.bias": r(4)}
    a = 0.3
    fused = FU.fuse_state(student, t1, t2, a)
    for k in ("bn.weight", "bn.bias", "out.bias"):
        assert torch.equal(fused[k], a * student[k] + (1 - a) * (t1[k] + t2[k]))  # W ← αW + (1−α)(W¹ + W²)
    w = fused["input_conv.weight"]  # channel 0 ← the T1 teacher, channel 1 ← the T2 teacher
    assert torch.equal(w[:, :1], a * student["input_conv.weight"][:, :1] + (1 - a) * t1["input_conv.weight"])
    assert torch.equal(w[:, 1:], a * student["input_conv.weight"][:, 1:] + (1 - a) * t2["input_conv.weight"])
    mean = FU.fuse_state(student, t1, t2, a, op="mean")
    assert torch.equal(mean["bn.bias"], a * student["bn.bias"] + (1 - a) * (t1["bn.bias"] + t2["bn.bias"]) / 2)
    assert torch.equal(mean["input_conv.weight"], w)
    assert FU.fuse_state(student, t1, t2, 1.0)["bn.bias"].equal(student["bn.bias"])
    with pytest.raises(ValueError, match=r"out.bias is \(4,\) in the fusion model but \(4,\) / \(5,\)"):
        FU.fuse_state(student, t1, {**t2, "out.bias": r(5)}, a)


def test_fusion_event_touches_trainable_tensors_only():
    torch.manual_seed(0)
    net, a, b = DenseUNet3D(2, 4, 4, 2), DenseUNet3D(1, 4, 4, 2), DenseUNet3D(1, 4, 4, 2)
    for t in (a, b):  # give the teachers' BN statistics values of their own
        t.train()(torch.randn(2, 1, 8, 8, 8))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    t1, t2 = FU.trainable(a), FU.trainable(b)
    FU.fuse_into(net, t1, t2, 0.25, "sum", net.first_conv)
    after = net.state_dict()
    expect = FU.fuse_state({k: before[k] for k in t1}, t1, t2, 0.25)
    for k, v in after.items():
        if k in expect:
            assert torch.equal(v, expect[k]), k
        else:  # BN running mean / var / count: the fusion model's own
            assert "running" in k or "num_batches" in k
            assert torch.equal(v, before[k]), k


def test_alpha_eq5_and_schedules():
    assert FU.alpha_eq5(0.9, 0.5, 8) == pytest.approx(1.9 / (2 + 8))
    assert FU.alpha_eq5(1.0, 100.0, 1) == 1.0  # clamped: (P+1)/(1/L+N) = 2/1.01
    assert FU.alpha_eq5(0.5, 0.0, 8) == 0.0
    cb = FU.FusionEvents({}, {}, [], every=5, schedule="eq5", op="sum", batch_size=8, total_events=4)
    assert cb.alpha() == 0.01  # before the first validation
    cb.last = (0.8, 0.25)
    assert cb.alpha() == pytest.approx(1.8 / 12)
    ramp = FU.FusionEvents({}, {}, [], every=5, schedule="ramp", op="sum", batch_size=8, total_events=4)
    got = []
    for _ in range(4):
        got.append(ramp.alpha())
        ramp.events.append({})
    assert got == pytest.approx([0.01, 0.34, 0.67, 1.0])
    assert FU.FusionEvents({}, {}, [], every=5, schedule="const:0.6", op="sum", batch_size=8,
                           total_events=4).alpha() == 0.6
    state = cb.state_dict()
    fresh = FU.FusionEvents({}, {}, [], every=5, schedule="eq5", op="sum", batch_size=8, total_events=4)
    fresh.load_state_dict(state)
    assert fresh.alpha() == cb.alpha()


def _analyze_labels(path):
    return np.asarray(nib.load(str(path)).dataobj)


@pytest.mark.slow
def test_learns_on_fixture_teachers_fusion_eval_predict(cli, runs):
    """The fixture through the CLI at its smallest useful size (released decoder, 3 epochs of 20 steps per phase):
    each tissue's Dice beats its chance level (its voxel frequency), mean Dice ≥ 0.5, α logged within (0, 1), the
    teachers' losses fall; eval gives the same numbers; predict writes subject-5-label.hdr/.img in iSEG's values."""
    common = ["--dataset", "iseg2017", "--fixture", "--runs-dir", runs, "-o", "model.up_attention=false",
              "-o", "train.epochs=3"]
    r = cli("fuse", "dense-unet-teachers", *common, "--json")
    assert r.code == 0, r.err
    out = r.json()
    m = out["metrics"]
    assert m["mean_dice"] >= 0.5, m
    for t in ("csf", "gm", "wm"):
        assert m[f"dice_{t}"] > m[f"chance_{t}"] + 0.1, (t, m)
    assert m["fusion_events"] == 3 and 0 < m["alpha_min"] and m["alpha_max"] < 1 and m["alpha_first"] == 0.01
    assert m["t1_loss_ratio"] < 1 and m["t2_loss_ratio"] < 1 and m["loss_ratio_after_first_event"] < 1, m
    run = runs / "dense-unet-teachers" / f"fuse-{out['run_id'][:12]}"
    for f in ("per_case.csv", "paper.md", "fusion_events.csv", "checkpoints/model.safetensors",
              "figures/learning_curves.png", "figures/alpha.png", "figures/overlay_subject-4.png", "MANIFEST.sha256"):
        assert (run / f).exists(), f
    events = (run / "fusion_events.csv").read_text().splitlines()
    assert events[0].startswith("event,step,epoch,alpha") and len(events) == 4
    paper = (run / "paper.md").read_text()
    assert "Table 4" in paper and "0.96" in paper and "Fusion events" in paper and "not comparable" in paper
    info = json.loads((run / "run.json").read_text())
    assert len(info.get("children", [])) == 2  # the two teachers, each a run of its own
    teachers = sorted((runs / "dense-unet-teachers").glob("train-teacher-*"))
    assert len(teachers) == 2

    ev = cli("eval", "dense-unet-teachers", *common, "--json")
    assert ev.code == 0, ev.err
    assert ev.json()["metrics"]["mean_dice"] == pytest.approx(m["mean_dice"])

    pred = cli("predict", "dense-unet-teachers", *common, "--json")
    assert pred.code == 0, pred.err
    folder = runs / "dense-unet-teachers" / f"predict-{pred.json()['run_id'][:12]}" / "predictions"
    assert sorted(p.name for p in folder.iterdir()) == ["subject-5-label.hdr", "subject-5-label.img"]
    labels = _analyze_labels(folder / "subject-5-label.hdr")
    assert labels.shape == (40, 40, 40, 1) and labels.dtype == np.uint8
    assert set(np.unique(labels).tolist()) <= {0, 10, 150, 250} and len(np.unique(labels)) >= 3


@pytest.mark.slow
def test_leave_one_out_on_mrbrains13_is_one_fuse_run_per_subject(cli, runs):
    """MRBrainS13's fixture (T1 + T2-FLAIR NIfTI, 3 mm slices), at a size that only checks the wiring: two held-out
    subjects, each a fuse run (with its own two teachers), summarised."""
    r = cli("loo", "dense-unet-teachers", "--dataset", "mrbrains13", "--fixture", "--runs-dir", runs, "--json",
            "-o", "model.up_attention=false", "-o", "train.epochs=1", "-o", "train.patches_per_epoch=8",
            "-o", "eval.overlays=false")
    assert r.code == 0, r.err
    m = r.json()["metrics"]
    assert m["subjects"] == 2 and 0 <= m["mean_dice"] <= 1
    run = runs / "dense-unet-teachers" / f"loo-{r.json()['run_id'][:12]}"
    rows = (run / "per_subject.csv").read_text().splitlines()
    assert rows[0].startswith("name,held_out") and len(rows) == 3
    assert len(list((runs / "dense-unet-teachers").glob("fuse-*"))) == 2
    assert len(list((runs / "dense-unet-teachers").glob("train-teacher-*"))) == 4
    assert "Table 3" in (run / "paper.md").read_text()


@pytest.fixture
def iseg(tmp_path):
    from medrun.datasets import get

    return get("iseg2017").make_fixture(tmp_path / "d", 0)


def _not_complete(runs):
    for run in (runs / "dense-unet-teachers").iterdir():
        assert not (run / "MANIFEST.sha256").exists()
        assert json.loads((run / "run.json").read_text())["status"] != "complete"


def test_label_values_outside_the_set_fail_the_fusion_and_its_teacher(cli, runs, iseg):
    lab = iseg / "iSeg-2017-Training" / "subject-2-label.hdr"
    img = nib.load(str(lab))
    arr = np.array(img.dataobj)
    arr[arr == 150] = 151
    nib.save(nib.AnalyzeImage(arr, img.affine, header=img.header), str(lab))
    r = cli("fuse", "dense-unet-teachers", "--dataset", "iseg2017", "--data-dir", iseg, "--runs-dir", runs,
            "-o", "dataset.val_subject=4")
    assert r.code == 3 and str(lab) in r.err and "outside 0/10/150/250: 151" in r.err and "Traceback" not in r.err
    _not_complete(runs)


def test_header_longer_than_data_is_refused_before_a_run(cli, runs, iseg):
    img = iseg / "iSeg-2017-Training" / "subject-1-T2.img"
    img.write_bytes(img.read_bytes()[:-100])
    r = cli("train-teacher", "dense-unet-teachers", "--dataset", "iseg2017", "--data-dir", iseg, "--runs-dir", runs)
    assert r.code == 3 and "subject-1-T2" in r.err and "Traceback" not in r.err
    assert not (runs / "dense-unet-teachers").exists() or not any(
        (p / "MANIFEST.sha256").exists() for p in (runs / "dense-unet-teachers").iterdir())


def test_patch_larger_than_the_volume_is_a_usage_error(cli, runs, iseg):
    r = cli("train-teacher", "dense-unet-teachers", "--dataset", "iseg2017", "--data-dir", iseg, "--runs-dir", runs,
            "-o", "train.patch_size=64", "-o", "dataset.val_subject=4")
    assert r.code == 2 and "train.patch_size 64 is larger than" in r.err and "subject-1-T1.hdr" in r.err
    assert "Traceback" not in r.err
    _not_complete(runs)


def test_manifest_errors(cli, runs):
    bad = cli("fuse", "dense-unet-teachers", "--dataset", "iseg2017", "--fixture", "--runs-dir", runs,
              "-o", "fusion.alpha=const:1.5")
    assert bad.code == 2 and "fusion.alpha" in bad.err and "const:<v>" in bad.err
    odd = cli("fuse", "dense-unet-teachers", "--dataset", "iseg2017", "--fixture", "--runs-dir", runs,
              "-o", "train.patch_size=18")
    assert odd.code == 2 and "divisible by 4" in odd.err
    who = cli("train-teacher", "dense-unet-teachers", "--dataset", "iseg2017", "--fixture", "--runs-dir", runs,
              "-o", "dataset.val_subject=9")
    assert who.code == 2 and "val_subject 9" in who.err and "[1, 2, 3, 4]" in who.err
