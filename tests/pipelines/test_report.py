from types import SimpleNamespace as NS

from medrun.pipelines.report import paper_md


def _page(**kw):
    spec = NS(title="T", paper="P")
    manifest = NS(paper=NS(table="Table 1", setting="s", expect={"accuracy": 0.9, "asr": 0.8}),
                  eval=NS(metrics=["accuracy", "auroc"]))
    ctx = NS(stage="attack", run=NS(info=lambda: {"id": "abc"}), data_roots={"d": "/data"}, fixture=False)
    return paper_md(spec, manifest, {"asr": 0.95}, ctx, **kw)


def test_paper_md_rows_and_present_only():
    full = _page()
    assert all(f"| {k} |" in full for k in ("accuracy", "asr", "auroc"))  # every expected and listed metric
    assert "| asr | 0.9500 | 0.8000 | 0.1500 |" in full
    only = _page(present_only=True)
    assert "| asr |" in only and "| accuracy |" not in only and "| auroc |" not in only
