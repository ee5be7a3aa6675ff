"""lorasam ``ablate``: Table 4 (LoRA rank r on EndoVis17) and Table 5 (which parts are tuned, on CholecSeg8k) as one
sweep of ordinary train runs of the manifest, one per variant, reused when complete; ``ablate.ranks`` and
``ablate.components`` choose the rows (the paper runs Table 4 on EndoVis17 and Table 5 on CholecSeg8k; here both
run on whichever dataset the manifest names).

Variants (Table 5): ``pos_embed`` (position embedding only: no LayerNorms, no TAL, no LoRA; the text token is the
first 256 dims of the text vector), ``norms`` (+ every "norm" parameter), ``tal`` (+ the Text Affine Layer),
``lora_no_tal`` (LayerNorms + LoRA, no TAL) and ``full`` (LoRASAM). Table 4: ``model.rank`` = each of
``ablate.ranks`` with everything else as the manifest says; the variant equal to the manifest is the ``full`` run.
The zero-shot row (SAM with text prompts, no tuning) is the full run's ``zero_shot_dice``, measured when the base is
the card's stage A; on an official SAM checkpoint it is not measured and the row says so.

Choice of ours: the ``full`` run goes first; when its base is stage A (no ``model.sam_checkpoint``), every other
variant starts from that run's ``checkpoints/base.safetensors`` (``model.sam_checkpoint`` pointing at it,
``pretrain.epochs`` 0) instead of repeating stage A, so the rows differ only in what is tuned, as in the paper,
whose variants all start from the same SAM. Those children record the file's sha256 as their base."""

from __future__ import annotations

from ..report import markdown_table, paper_data, paper_md, paper_note
from ..sweep import Child

COMPONENTS = {  # name: (Table 5 row label, overrides)
    "pos_embed": ("pos. embed", {"model.norms": False, "model.tal": False, "model.lora": False}),
    "norms": ("pos. embed + LN", {"model.tal": False, "model.lora": False}),
    "tal": ("pos. embed + LN + TAL", {"model.lora": False}),
    "lora_no_tal": ("pos. embed + LN + LoRA (no TAL)", {"model.tal": False}),
    "full": ("pos. embed + LN + TAL + LoRA (LoRASAM)", {}),
}


def ablate(pipe) -> dict:
    ctx, spec, a = pipe.ctx, pipe.ctx.spec, pipe.m.ablate
    full = ctx.sweep([Child("full", {}, labels={"table": "5", "variant": COMPONENTS["full"][0]})], title="variant")[0]
    shared = {}
    if full.metrics.get("base_kind") == "pretrain":  # the other variants start from the same stage-A base
        shared = {"model.sam_checkpoint": str(full.run_dir / "checkpoints" / "base.safetensors"),
                  "pretrain.epochs": 0}
    children = [Child(f"rank{r}", {"model.rank": r, **shared}, labels={"table": "4", "variant": f"r={r}"})
                for r in a.ranks if r != pipe.m.model.rank]
    children += [Child(name.replace("_", "-"), {**COMPONENTS[name][1], **shared},
                       labels={"table": "5", "variant": COMPONENTS[name][0]})
                 for name in a.components if name != "full"]
    runs = {c.child.name: c for c in [full, *ctx.sweep(children, title="variant")]}
    ctx.write_csv("per_variant.csv", [r.row for r in runs.values()])
    rank_runs = {r: runs["full" if r == pipe.m.model.rank else f"rank{r}"] for r in a.ranks}
    comp_runs = {n: runs[n.replace("_", "-")] for n in a.components}
    metrics = {f"rank{r}.{k}": c.metrics[k] for r, c in rank_runs.items() for k in ("dice", "params_trainable")}
    metrics |= {f"{n}.{k}": c.metrics[k] for n, c in comp_runs.items() for k in ("dice", "params_trainable")}
    metrics["zero_shot_dice"] = full.metrics.get("zero_shot_dice")
    sections = [_rank_table(spec, rank_runs), _component_table(spec, comp_runs, full), paper_note(spec, "ablation"),
                paper_note(spec, "comparison")]
    tables = paper_data(spec)["tables"]
    expect = {f"rank{r[0]}.dice": r[2] for r in tables["table4"]["rows"] if r[0] in rank_runs}
    expect |= {f"{r[0]}.dice": r[2] for r in tables["table5"]["rows"] if r[0] in comp_runs}
    setting = "Table 4: EndoVis17, Table 5: CholecSeg8k; SAM ViT-B, CLIP ViT-B/32 text prompts, class-mean DSC"
    ctx.write_text("paper.md", paper_md(spec, pipe.m, metrics, ctx, title="LoRASAM ablations (Tables 4 and 5)",
                                        table="Tables 4 and 5", setting=setting, expect=expect, keys=list(expect),
                                        sections=sections))
    ctx.log("\n".join(s for s in sections[:2]))
    return metrics


def _rank_table(spec, rank_runs: dict) -> str:
    paper = {int(r[0]): r[1:] for r in paper_data(spec)["tables"]["table4"]["rows"]}
    body = [[f"r = {r}", int(c.metrics["params_trainable"]), c.metrics["dice"], c.metrics["dice_present"],
             *(paper.get(r) or ["—", "—"]), c.run_id[:12]] for r, c in rank_runs.items()]
    return "## Table 4: LoRA rank (this run beside the paper's EndoVis17 rows)\n\n" + markdown_table(
        ["rank", "trainable", "Dice", "Dice (present pairs)", "paper trainable (ViT-B)", "paper Dice", "run"], body)


def _component_table(spec, comp_runs: dict, full) -> str:
    paper = {r[0]: r[1:] for r in paper_data(spec)["tables"]["table5"]["rows"]}
    zs = full.metrics.get("zero_shot_dice")
    body = [["zero-shot (no tuning)", "—", zs if zs is not None else "not measured (official SAM base)",
             full.metrics.get("zero_shot_dice_present", "—"), *paper["zero-shot"], full.run_id[:12]]]
    body += [[COMPONENTS[n][0], int(c.metrics["params_trainable"]), c.metrics["dice"], c.metrics["dice_present"],
              *paper[n], c.run_id[:12]] for n, c in comp_runs.items()]
    return "## Table 5: which parts are tuned (this run beside the paper's CholecSeg8k rows)\n\n" + markdown_table(
        ["variant", "trainable", "Dice", "Dice (present pairs)", "paper trainable (ViT-B)", "paper Dice", "run"], body)
