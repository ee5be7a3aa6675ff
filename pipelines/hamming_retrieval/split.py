"""hamming-retrieval ``split``: the train / gallery / query lists from ``Data_Entry_2017.csv`` (card: "split"),
with the counts of what the 13-finding selection left out, images per finding and split, and the paper's sizes."""

from __future__ import annotations

from ..report import paper_md
from . import figures

PAPER_SIZES = {"selected": 51480, "train": 38610, "gallery": 10296, "query": 2574}


def split(p) -> dict:
    splits = p.splits()
    labels = p.labels
    for name, part in splits.items():
        p.ctx.write_csv(f"splits/{name}.csv", [{"image": n, "patient": pt, "labels": "|".join(
            lab for lab, v in zip(labels, y, strict=True) if v)} for n, pt, y in zip(part.names, part.patients, part.y,
                                                                                    strict=True)])
    counts = {s: dict(zip(labels, part.y.sum(0).tolist(), strict=True)) for s, part in splits.items()}
    p.ctx.write_csv("label_counts.csv", [{"label": lab, **{s: counts[s][lab] for s in splits}} for lab in labels])
    figures.label_counts(p.ctx, counts, labels)
    patients = {s: set(part.patients) for s, part in splits.items()}
    shared = len((patients["train"] & (patients["gallery"] | patients["query"])) | (patients["gallery"]
                                                                                    & patients["query"]))
    metrics = {**p.counts, **{s: len(part) for s, part in splits.items()}, "patients_in_two_splits": shared,
               "patient_split": p.m.dataset.patient_split}
    p.ctx.log(f"{metrics['csv_rows']} rows: {metrics['no_finding']} No Finding, {metrics['without_kept_label']} "
              f"without a kept label, {metrics['selected']} selected → " + " · ".join(
                  f"{s} {len(part)}" for s, part in splits.items()) + f"; {shared} patients in two splits")
    p.ctx.write_text("paper.md", paper_md(p.ctx.spec, p.m, metrics, p.ctx, title="hamming-retrieval split",
                                          expect=PAPER_SIZES, keys=list(PAPER_SIZES), table="Section 4.2",
                                          setting="51,480 NIH images with one of 13 findings, split 75/20/5 %",
                                          sections=[
        f"## Selection\n\nKept: images with at least one of {len(labels)} findings ({', '.join(labels)}); "
        f"{metrics['no_finding']} 'No Finding' images and {metrics['without_kept_label']} images with none of "
        "those findings (e.g. Hernia alone) are left out. The paper does not give its exact rule; the obvious rules "
        f"give slightly more than its 51,480 images. Split seed {p.m.dataset.split_seed}, "
        + ("patient-disjoint." if p.m.dataset.patient_split else f"per image ({shared} patients have images in two "
                                                                    "splits, as in the paper's random split).")]))
    return metrics
