"""hamming-retrieval: the target and predicted distances against the paper's Tables 1 and 4, the losses against
direct formulas, faiss's exact Hamming search against a brute-force reference, the metrics on hand-computed
rankings, the AlexNet hashing network at full size, learning on the NIH fixture through the CLI, the stages on
finished runs (split, index, retrieve, eval), and the issue's bad inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from medrun.pipelines.hamming_retrieval import hashing, search
from medrun.pipelines.hamming_retrieval.pipeline import j1_stats, ranking_scores

SLUG = "hamming-retrieval"


# -- the paper's distances ----------------------------------------------------------------------------------------
TABLE1 = [  # y_i, y_j, n1, n2, L^(n1), D_H  (L = 3, K = 16)
    ([1, 0, 1], [0, 1, 0], 3, 0, [16, 10, 5, 0], 16),
    ([1, 1, 1], [1, 0, 0], 3, 1, [16, 10, 5, 0], 10),
    ([1, 1, 1], [1, 1, 0], 3, 2, [16, 10, 5, 0], 5),
    ([1, 1, 1], [1, 1, 1], 3, 3, [16, 10, 5, 0], 0),
    ([1, 0, 0], [0, 1, 0], 2, 0, [16, 8, 0], 16),
    ([1, 1, 0], [1, 0, 0], 2, 1, [16, 8, 0], 8),
    ([1, 1, 0], [1, 1, 0], 2, 2, [16, 8, 0], 0),
    ([1, 0, 0], [1, 0, 0], 1, 1, [16, 0], 0),
]


def test_target_distance_reproduces_table1():
    for yi, yj, n1, n2, lst, d in TABLE1:
        assert hashing.hd_list(n1, 16) == lst and lst[n2] == d
        got = hashing.target_distance(torch.tensor([yi]), torch.tensor([yj]), 16)
        assert got.tolist() == [d], (yi, yj)


def test_target_distance_reproduces_table4():
    """Pairs with Jaccard 3/5, 3/4, 1/2, 3/4 → the card's ground-truth D_H for K = 16, 32, 48, 64."""
    h1 = torch.tensor([[1, 1, 1, 1, 0, 0]])
    partners = torch.tensor([[1, 1, 1, 0, 1, 0],   # ∩ 3, ∪ 5
                             [1, 1, 1, 0, 0, 0],   # ∩ 3, ∪ 4
                             [1, 1, 0, 0, 0, 0],   # ∩ 2, ∪ 4
                             [0, 1, 1, 1, 0, 0]])  # ∩ 3, ∪ 4
    expected = {16: [6, 4, 8, 4], 32: [12, 8, 16, 8], 48: [19, 12, 24, 12], 64: [25, 16, 32, 16]}
    for k, d in expected.items():
        assert hashing.target_distance(h1.expand(4, -1), partners, k).tolist() == d, k
    # ⌊K(1 − J)⌋ in integers: no floating-point floor error at exact multiples
    for k in (16, 24, 32, 48, 64, 128):
        for n1 in range(1, 14):
            for n2 in range(n1 + 1):
                assert hashing.hd_list(n1, k)[n2] == math.floor(k * (n1 - n2) / n1 + 1e-9)


def test_predicted_distance_is_hamming_for_sign_codes():
    g = torch.Generator().manual_seed(0)
    for k in (16, 32, 48, 64):
        a = torch.randint(0, 2, (200, k), generator=g).float() * 2 - 1
        b = torch.randint(0, 2, (200, k), generator=g).float() * 2 - 1
        d = hashing.predicted_distance(a, b)
        torch.testing.assert_close(d, (a != b).sum(1).float(), rtol=0, atol=1e-4)
        # and the packed search counts the same distances
        packed = search.distances(search.pack(search.to_bits(a)), search.pack(search.to_bits(b)))
        np.testing.assert_array_equal(np.diag(packed), (a != b).sum(1).numpy())


def test_losses_match_direct_formulas():
    g = torch.Generator().manual_seed(1)
    hi, hj = torch.tanh(torch.randn(6, 16, generator=g)), torch.tanh(torch.randn(6, 16, generator=g))
    yi, yj = torch.randint(0, 2, (6, 13), generator=g), torch.randint(0, 2, (6, 13), generator=g)
    yi[:, 0] = yj[:, 0] = 1  # every image has a label (the selection)
    li, lj = torch.randn(6, 13, generator=g), torch.randn(6, 13, generator=g)
    j1 = 0.0
    for a, b, p, q in zip(hi, hj, yi, yj, strict=True):
        n1, n2 = int((p | q).sum()), int((p & q).sum())
        target = (16 * (n1 - n2)) // n1
        pred = 8 * (1 - float(a @ b) / float(a.norm() * b.norm()))
        j1 += math.log(math.cosh((target - pred) / 16))
    assert float(hashing.ahdl(hi, hj, yi, yj)) == pytest.approx(j1, rel=1e-5)
    bce = torch.nn.BCEWithLogitsLoss(reduction="sum")
    assert float(hashing.pmcl(li, lj, yi, yj)) == pytest.approx(float(bce(li, yi.float()) + bce(lj, yj.float())),
                                                                rel=1e-6)
    x = torch.tensor([-100.0, -3.0, -0.1, 0.0, 0.5, 2.0, 50.0])
    ref = torch.log(torch.cosh(x.double())).float()
    torch.testing.assert_close(hashing.log_cosh(x)[1:-1], ref[1:-1])
    assert torch.isfinite(hashing.log_cosh(x)).all()
    assert float(hashing.log_cosh(torch.tensor(100.0))) == pytest.approx(100 - math.log(2))


# -- search ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits,distinct", [(16, 5), (32, 40), (64, 5000)])
def test_faiss_search_equals_brute_force_and_the_reference_ranking(bits, distinct):
    """faiss IndexBinaryFlat over the seeded-shuffled gallery gives exactly the reference code's shuffled-then-
    stable-sorted lists and distances (many ties when few codes are distinct), and the shared metrics' ranking."""
    from medrun.metrics import retrieval as RT

    rng = np.random.default_rng(bits)
    pool = rng.integers(0, 2, (distinct, bits), dtype=np.uint8)
    gallery, queries = pool[rng.integers(0, distinct, 600)], pool[rng.integers(0, distinct, 25)]
    g, q = search.pack(gallery), search.pack(queries)
    for k in (1, 10, 100, 600):
        f_ids, f_d = search.HammingIndex(g, bits, 3407).search(q, k)
        b_ids, b_d = search.brute_force(q, g, k, 3407)
        np.testing.assert_array_equal(f_ids, b_ids)
        np.testing.assert_array_equal(f_d, b_d)
    order, dist = RT.hamming_rank(queries, gallery, seed=3407)
    np.testing.assert_array_equal(f_ids, order)
    np.testing.assert_array_equal(f_d, dist)
    ids, _ = search.HammingIndex(g, bits, None).search(q, 600)  # no shuffle: ties in gallery order
    np.testing.assert_array_equal(ids, RT.hamming_rank(queries, gallery, seed=None)[0])
    np.testing.assert_array_equal(search.unpack(g, bits), gallery)


def test_index_refuses_codes_of_another_length():
    with pytest.raises(ValueError, match="not 32-bit"):
        search.HammingIndex(np.zeros((4, 2), np.uint8), 32)


# -- metrics on hand-computed rankings ------------------------------------------------------------------------------
def test_ranking_scores_on_a_toy_ranking():
    """Query labels {A, B}; gallery relevances (shared labels) [0, 2, 1, 0, 1]; retrieved top 3 = items 2, 0, 1."""
    rel = np.array([[0, 2, 1, 0, 1]])
    ids = np.array([[2, 0, 1]])
    s = {k: float(v[0]) for k, v in ranking_scores(rel, ids, 3).items()}
    dcg = (2**1 - 1) / math.log2(2) + 0 + (2**2 - 1) / math.log2(4)  # R = 1, 0, 2
    idcg_retrieved = 3 / math.log2(2) + 1 / math.log2(3) + 0  # 2, 1, 0
    idcg_gallery = 3 + 1 / math.log2(3) + 1 / 2  # 2, 1, 1
    assert s["ndcg_retrieved"] == pytest.approx(dcg / idcg_retrieved)
    assert s["ndcg_gallery"] == pytest.approx(dcg / idcg_gallery)
    assert s["acg"] == pytest.approx(1.0)
    assert s["wmap"] == pytest.approx((1 / 1 + 3 / 3) / 2)  # ACG_q@1 = 1, ACG_q@3 = 1 at the two hits
    assert s["map"] == pytest.approx((1 + 2 / 3) / 2)
    nothing = ranking_scores(np.array([[0, 0, 0, 1]]), np.array([[0, 1]]), 2)
    assert all(float(v[0]) == 0.0 for v in nothing.values())  # iDCG 0 → nDCG 0, no hit → wMAP 0


def test_j1_stats(tmp_path):
    csv = tmp_path / "metrics.csv"
    csv.write_text("epoch,loss,loss_j1,step\n0,3.0,0.25,8\n1,2.0,0.2,17\n2,1.0,0.1,26\n")
    assert j1_stats(csv) == pytest.approx({"j1_first": 0.25, "j1_last": 0.1, "j1_fall": 0.6})
    assert j1_stats(tmp_path / "none.csv") == {}


# -- the network at full size -------------------------------------------------------------------------------------
def _alexnet_state(seed=0) -> dict:
    """A state dict with torchvision AlexNet's names and shapes (3-channel conv1, classifier.1/4/6)."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"features.0": (64, 3, 11, 11), "features.3": (192, 64, 5, 5), "features.6": (384, 192, 3, 3),
              "features.8": (256, 384, 3, 3), "features.10": (256, 256, 3, 3), "classifier.1": (4096, 9216),
              "classifier.4": (4096, 4096), "classifier.6": (1000, 4096)}
    state = {}
    for name, shape in shapes.items():
        state[f"{name}.weight"] = torch.randn(shape, generator=g) * 0.02
        state[f"{name}.bias"] = torch.randn(shape[0], generator=g) * 0.02
    return state


def _alexnet_features(state, x):
    """torchvision's AlexNet ``features`` + ``avgpool`` written out with torch.nn.functional."""
    F = torch.nn.functional
    w = lambda i: (state[f"features.{i}.weight"], state[f"features.{i}.bias"])  # noqa: E731
    x = F.max_pool2d(F.relu(F.conv2d(x, *w(0), stride=4, padding=2)), 3, 2)
    x = F.max_pool2d(F.relu(F.conv2d(x, *w(3), padding=2)), 3, 2)
    x = F.relu(F.conv2d(x, *w(6), padding=1))
    x = F.relu(F.conv2d(x, *w(8), padding=1))
    x = F.max_pool2d(F.relu(F.conv2d(x, *w(10), padding=1)), 3, 2)
    return torch.flatten(F.adaptive_avg_pool2d(x, 6), 1)


def test_full_size_network_matches_card_and_alexnet():
    """AlexNet features on one 224² channel → 256×6×6 = 9,216; fc_h 9216→4096→K, net_c 9216→4096→13. With AlexNet
    weights loaded (conv1 averaged over RGB) the conv stack gives what AlexNet gives on the grey image as RGB."""
    from medrun.models import create

    net = create("alexnet-hash", code_bits=16, num_labels=13, in_channels=1).eval()
    conv = [(1, 64, 11), (64, 192, 5), (192, 384, 3), (384, 256, 3), (256, 256, 3)]
    n_conv = sum(o * i * k * k + o for i, o, k in conv)
    n_heads = 2 * (9216 * 4096 + 4096) + (4096 * 16 + 16) + (4096 * 13 + 13)
    assert sum(p.numel() for p in net.parameters()) == n_conv + n_heads == 78_078_685
    assert sum(p.numel() for p in create("alexnet-hash", code_bits=64).parameters()) == 78_078_685 + 4097 * 48
    state = _alexnet_state()
    done = net.load_alexnet(state)
    assert len(done) == 14  # 5 convs × (weight, bias) + the first Linear of both heads
    x = torch.rand(1, 1, 224, 224)
    with torch.no_grad():
        z = net.embed(x)
        assert z.shape == (1, 9216)
        torch.testing.assert_close(z, _alexnet_features(state, x.expand(1, 3, -1, -1) / 3), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(net.net_c[0].weight, state["classifier.1.weight"])
        h, logits = net.heads(x)
    assert h.shape == (1, 16) and logits.shape == (1, 13) and h.abs().max() <= 1
    torch.testing.assert_close(net(x), h)
    with pytest.raises(KeyError):
        net.load_alexnet({k: v for k, v in state.items() if k != "features.8.weight"})


# -- through the CLI --------------------------------------------------------------------------------------------------
# the learning check's settings: the smallest input the AlexNet stack takes (64², its last pool sees 3×3), narrow
# heads, 2 epochs; the fixture manifest's He-normal initialisation
FAST = ("-o", "dataset.img_size=64", "-o", "model.fc_width=128", "-o", "train.batch_size=16",
        "-o", "train.epochs=2", "-o", "eval.random_draws=5")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The learning check's train run, shared by the tests of the stages that build on it."""
    import os

    from medrun.cli.main import main

    runs = tmp_path_factory.mktemp("hr-runs")
    os.environ["MEDRUN_PLAIN"] = "1"
    assert main(["train", SLUG, "--dataset", "nih", "--fixture", "--runs-dir", str(runs), *FAST]) == 0
    (run,) = (runs / SLUG).glob("train-*")
    return runs, run


@pytest.mark.slow
def test_learns_on_fixture(trained):
    """`medrun train` on the NIH fixture (64², 2 epochs, ~15 s of CPU): the query split's nDCG@20 with the gallery
    iDCG clearly beats random ±1 codes (the card's smoke asks 0.15 at 112²), J1 falls, and the run has its outputs."""
    runs, run = trained
    m = json.loads((run / "metrics.json").read_text())
    assert m["ndcg_gallery_over_random"] >= 0.15 and m["j1_fall"] > 0.1, m
    assert m["ndcg_retrieved"] >= m["ndcg_gallery"] and m["n_queries"] == 18 and m["n_gallery"] == 71
    for f in ("checkpoints/model.safetensors", "per_case.csv", "paper.md", "figures/retrieval.png",
              "figures/hamming_vs_target.png", "figures/learning_curves.png", "MANIFEST.sha256"):
        assert (run / f).exists(), f
    page = (run / "paper.md").read_text()
    assert "Table 2" in page and "Table 4 on this run" in page and "not comparable" in page.lower()


def _complete(runs, stage):
    return [p for p in (runs / SLUG).glob(f"{stage}-*") if (p / "MANIFEST.sha256").exists()]


@pytest.mark.slow
def test_stages_on_finished_runs(cli, trained, tmp_path):
    runs, train_run = trained
    opts = ("--dataset", "nih", "--fixture", "--runs-dir", runs, *FAST)
    sp = cli("split", SLUG, *opts, "--json")
    assert sp.code == 0, sp.err
    m = sp.json()["metrics"]
    assert (m["train"], m["gallery"], m["query"]) == (266, 71, 18) and m["selected"] == 355
    sp_run = Path(sp.json()["run_dir"])
    lines = (sp_run / "splits" / "query.csv").read_text().splitlines()
    assert lines[0] == "image,patient,labels" and len(lines) == 19

    ev = cli("eval", SLUG, *opts, "--json")
    assert ev.code == 0, ev.err
    train_metrics = json.loads((train_run / "metrics.json").read_text())
    assert ev.json()["metrics"]["ndcg_retrieved"] == pytest.approx(train_metrics["ndcg_retrieved"])
    gal = cli("eval", SLUG, *opts, "-o", "eval.idcg=gallery", "--json").json()["metrics"]
    assert gal["ndcg"] == pytest.approx(train_metrics["ndcg_gallery"])

    ix = cli("index", SLUG, *opts, "--json")
    assert ix.code == 0, ix.err
    im = ix.json()["metrics"]
    assert im["n_codes"] == 71 and im["index_bytes"] == 71 * 2 and im["faiss_matches_bruteforce"] is True
    ix_run = Path(ix.json()["run_dir"])
    with np.load(ix_run / "index" / "codes.npz", allow_pickle=False) as z:
        assert z["codes"].shape == (71, 2) and z["codes"].dtype == np.uint8 and int(z["bits"]) == 16

    rt = cli("retrieve", SLUG, *opts, "-o", "retrieve.top_k=5", "--json")
    assert rt.code == 0, rt.err
    rm = rt.json()["metrics"]
    assert rm["n_queries"] == 18 and rm["top_k"] == 5 and rm["gallery"] == 71
    rt_run = Path(rt.json()["run_dir"])
    rows = (rt_run / "per_case.csv").read_text().splitlines()
    assert rows[0].startswith("query,rank,image,distance,labels") and len(rows) == 1 + 18 * 5
    assert (rt_run / "figures" / "retrieved.png").exists()

    # one query image from outside the dataset, with --checkpoint and the index file
    from medrun.datasets import nih

    img = tmp_path / "q" / "query.png"
    img.parent.mkdir()
    from PIL import Image

    Image.fromarray(nih.draw_cxr(("Cardiomegaly",), np.random.default_rng(5))).save(img)
    one = cli("retrieve", SLUG, *opts, "--checkpoint", train_run / "checkpoints" / "model.safetensors",
              "-o", f"retrieve.index={ix_run / 'index' / 'codes.npz'}", "-o", f"retrieve.input={img}",
              "-o", "retrieve.top_k=3", "--json")
    assert one.code == 0, one.err
    assert one.json()["metrics"]["n_queries"] == 1 and "mean_shared_labels" not in one.json()["metrics"]


# -- bad input --------------------------------------------------------------------------------------------------------
@pytest.fixture
def nih_copy(tmp_path):
    from medrun.datasets import get

    return get("nih").make_fixture(tmp_path / "nih", 0)


def _one_line(err: str) -> bool:
    return "Traceback" not in err and len([ln for ln in err.splitlines() if ln.startswith("error:")]) == 1


def test_missing_image_names_the_file(cli, runs, nih_copy):
    victim = sorted((nih_copy / "images_001" / "images").iterdir())[7]
    victim.unlink()
    r = cli("train", SLUG, "--dataset", "nih", "--data-dir", nih_copy, "--runs-dir", runs)
    assert r.code == 3 and victim.name in r.err and "Data_Entry_2017.csv" in r.err and _one_line(r.err)
    assert not runs.exists()


def test_unknown_label_string_names_the_line(cli, runs, nih_copy):
    csv = nih_copy / "Data_Entry_2017.csv"
    lines = csv.read_text().splitlines()
    lines[5] = lines[5].replace(lines[5].split(",")[1], "Cardiomegaly|Pleural Thickening", 1)
    csv.write_text("\n".join(lines) + "\n")
    r = cli("split", SLUG, "--dataset", "nih", "--data-dir", nih_copy, "--runs-dir", runs)
    assert r.code == 3 and "line 6" in r.err and "Pleural Thickening" in r.err and _one_line(r.err)
    assert not runs.exists()


def test_unknown_label_in_manifest(cli, runs):
    r = cli("split", SLUG, "--dataset", "nih", "--fixture", "--runs-dir", runs, "-o", "dataset.labels=[Effusion,Flu]")
    assert r.code == 2 and "Flu" in r.err


def test_code_bits_must_pack_into_bytes(cli, runs):
    r = cli("train", SLUG, "--dataset", "nih", "--fixture", "--runs-dir", runs, "-o", "model.code_bits=12")
    assert r.code == 2 and "multiple of 8" in r.err


@pytest.mark.slow
def test_retrieve_refuses_wrong_channels_and_wrong_code_length(cli, trained, tmp_path):
    from PIL import Image

    runs, train_run = trained
    opts = ("--dataset", "nih", "--fixture", "--runs-dir", runs, *FAST)
    ix = cli("index", SLUG, *opts, "--json")
    assert ix.code == 0, ix.err
    codes = Path(ix.json()["run_dir"]) / "index" / "codes.npz"
    weights = train_run / "checkpoints" / "model.safetensors"

    rgb = tmp_path / "colour.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(rgb)
    before = len(_complete(runs, "retrieve"))
    r = cli("retrieve", SLUG, *opts, "--checkpoint", weights, "-o", f"retrieve.index={codes}",
            "-o", f"retrieve.input={rgb}")
    assert r.code == 3 and "colour.png" in r.err and "3 colour channels" in r.err and _one_line(r.err)

    # an index of 32-bit codes searched with the 16-bit model
    other = tmp_path / "codes32.npz"
    with np.load(codes, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    data["codes"], data["bits"] = np.concatenate([data["codes"]] * 2, axis=1), np.array(32)
    np.savez(other, **data)
    r = cli("retrieve", SLUG, *opts, "--checkpoint", weights, "-o", f"retrieve.index={other}")
    assert r.code == 2 and "codes32.npz" in r.err and "32-bit" in r.err and "16-bit" in r.err and _one_line(r.err)
    assert len(_complete(runs, "retrieve")) == before  # nothing marked complete



def test_released_npy_layout_is_read_as_its_split(cli, runs, tmp_path):
    """The authors' released split: train/, gallery/, query/ of .npy images named <patient>_<follow-up>_<labels>."""
    from medrun.datasets import nih

    rng = np.random.default_rng(0)
    root = tmp_path / "released"
    sizes = {"train": 12, "gallery": 6, "query": 3}
    for part, n in sizes.items():
        (root / part).mkdir(parents=True)
        for i in range(n):
            labels = ("Effusion", "Pleural_Thickening") if i % 2 else ("Cardiomegaly",)
            np.save(root / part / f"{i:08d}_000_{'|'.join(labels)}.npy", nih.draw_cxr(labels, rng, 64))
    np.save(root / "train" / "00000099_000_Hernia.npy", nih.draw_cxr(("Hernia",), rng, 64))  # no kept label
    r = cli("split", SLUG, "--dataset", "nih", "--data-dir", root, "--runs-dir", runs, "--json")
    assert r.code == 0, r.err
    m = r.json()["metrics"]
    assert {k: m[k] for k in sizes} == sizes and m["without_kept_label"] == 1 and m["selected"] == 21
    rows = (Path(r.json()["run_dir"]) / "splits" / "gallery.csv").read_text().splitlines()
    assert rows[2].endswith(",Effusion|Pleural_Thickening")
    (root / "query" / "00000100_000_Pleural.npy").write_bytes(b"")
    bad = cli("split", SLUG, "--dataset", "nih", "--data-dir", root, "--runs-dir", runs, "--force")
    assert bad.code == 3 and "00000100_000_Pleural.npy" in bad.err and "not an NIH finding" in bad.err
