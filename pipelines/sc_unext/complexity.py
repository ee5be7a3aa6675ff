"""sc-unext ``complexity`` (Table 1's Params / FLOPs columns): parameters (also in the paper's 1024-units) and
multiply-accumulates (``torch.utils.flop_counter.FlopCounterMode``, FLOPs / 2, batch 1) of ``complexity.models``
at each of ``complexity.sizes``."""

from __future__ import annotations

import torch

from medrun.errors import UsageError

from ..report import markdown_table, paper_md, paper_note, paper_table

MODELS = {
    "unext": {"arch": "unext", "size": "small", "cbam": False, "sc_skip": False, "pfm": False},
    "unext+cbam": {"arch": "unext", "size": "small", "cbam": True, "sc_skip": False, "pfm": False},
    "unext+skip": {"arch": "unext", "size": "small", "cbam": True, "sc_skip": True, "pfm": False},
    "unext+pfm": {"arch": "unext", "size": "small", "cbam": False, "sc_skip": False, "pfm": True},
    "sc-unext": {"arch": "unext", "size": "small", "cbam": True, "sc_skip": True, "pfm": True, "sc_f": "depthwise"},
    "sc-unext-full-f": {"arch": "unext", "size": "small", "cbam": True, "sc_skip": True, "pfm": True, "sc_f": "full"},
    "unext-paper": {"arch": "unext", "size": "paper", "cbam": False, "sc_skip": False, "pfm": False},
    "unet": {"arch": "unet"},
}


def complexity(p) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from .pipeline import build_net

    c, ctx = p.m.complexity, p.ctx
    rows, out = [], {}
    for name in c.models:
        if name not in MODELS:
            raise UsageError(f"unknown complexity model '{name}'", fix=f"choose from {', '.join(MODELS)}")
        net = build_net(p.m.model.model_copy(update=MODELS[name])).eval()
        n = sum(q.numel() for q in net.parameters())
        row = {"model": name, "params": n, "params_k1024": round(n / 1024, 2)}
        for s in c.sizes:
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                net(torch.zeros(1, 3, s, s))
            row[f"gmac_{s}"] = round(counter.get_total_flops() / 2e9, 4)
        rows.append(row)
        out[name] = row
    ctx.write_csv("complexity.csv", rows)
    md = markdown_table(list(rows[0]), [list(r.values()) for r in rows])
    ctx.write_text("paper.md", paper_md(ctx.spec, p.m, {}, ctx, title="SC-UNeXt complexity", sections=[
        "## Measured (MACs = FLOPs/2, batch 1)\n\n" + md, paper_table(ctx.spec, "table1"),
        paper_note(ctx.spec, "complexity")]))
    ctx.log("\n".join(f"{r['model']}: {r['params']:,} params, "
                      + ", ".join(f"{r[f'gmac_{s}']} GMAC @{s}²" for s in c.sizes) for r in rows))
    return {"models": out}
