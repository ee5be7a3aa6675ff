"""Provenance commands: ``verify``, ``rerun`` and the ``runs`` group (list, show, diff, compare).

None of them imports torch, Lightning or MONAI except ``rerun``, which runs a stage.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from medrun.errors import VerifyError

from .output import emit_json, stdout

RunsDir = Annotated[Path, typer.Option("--runs-dir", envvar="MEDRUN_RUNS", help="the runs directory")]
JsonOut = Annotated[bool, typer.Option("--json", help="machine-readable output")]

runs_app = typer.Typer(
    name="runs",
    help="Find, inspect and compare runs through an index of the runs directory.\n\n"
    "Examples:\n\n  medrun runs list --pipeline ad-lite\n\n  medrun runs show 3fa9c2\n\n"
    "  medrun runs diff 3fa9c2 77b1e0\n\n  medrun runs compare 3fa9c2 77b1e0 a01c33",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.command(name="verify", help=verify.__doc__, no_args_is_help=True)(verify)
    app.command(name="sign", help=sign.__doc__, no_args_is_help=True)(sign)
    app.command(name="rerun", help=rerun.__doc__, no_args_is_help=True)(rerun)
    app.command(name="export", help=export.__doc__, no_args_is_help=True)(export)
    app.command(name="report", help=report.__doc__)(report)
    app.add_typer(runs_app, name="runs")


# -- export ---------------------------------------------------------------------------------------------------
def export(
    run: Annotated[str, typer.Argument(help="a complete train run: id, id prefix, or run directory")],
    out: Annotated[Path, typer.Option("--out", help="the bundle folder to write")],
    fmt: Annotated[str, typer.Option("--format", help="monai-bundle")] = "monai-bundle",
    force: Annotated[bool, typer.Option("--force", help="replace a non-empty --out")] = False,
    runs_dir: RunsDir = Path("runs"),
    json_out: JsonOut = False,
) -> int:
    """Export a finished train run as a MONAI bundle (configs/metadata.json with the run's versions and hashes,
    configs/inference.yaml, models/model.pt, docs/README.md) that MONAI's bundle runner runs offline.

    Examples:

      medrun export 3fa9c2 --format monai-bundle --out bundles/ad-lite-oasis

      python -m monai.bundle run --config_file bundles/ad-lite-oasis/configs/inference.yaml \\
        --bundle_root bundles/ad-lite-oasis --input_dir images/ --output_dir out/

      medrun eval ad-lite --dataset oasis --checkpoint bundles/ad-lite-oasis/models/model.pt
    """
    from medrun.artifacts.verify import open_run
    from medrun.pipelines.export import export as do_export

    result = do_export(open_run(runs_dir, run), out, fmt, force)
    if json_out:
        emit_json(result)
    else:
        stdout().print(f"[bold green]exported[/] {result['bundle']} ({len(result['files'])} files, {fmt})")
    return 0


# -- verify ---------------------------------------------------------------------------------------------------
def verify(
    run: Annotated[str, typer.Argument(help="run id, id prefix, or run directory")],
    strict: Annotated[bool, typer.Option("--strict", help="code and environment drift, temp files and hidden data "
                                         "files fail too (exit 5)")] = False,
    rehash: Annotated[bool | None, typer.Option("--rehash/--no-rehash", help="re-hash the data's content instead of "
                                                "trusting the stat cache (default: re-hash when the data is at most "
                                                "256 MiB)", show_default=False)] = None,
    signers: Annotated[Path | None, typer.Option("--signers", help="OpenSSH allowed-signers file: also check "
                                                 "MANIFEST.sha256.sig (see `medrun sign`)")] = None,
    runs_dir: RunsDir = Path("runs"),
    json_out: JsonOut = False,
) -> int:
    """Check a run: re-hash its files against MANIFEST.sha256, re-fingerprint its data, compare code and environment.

    Exit 5 when an artifact or the data changed, was removed or added (hidden files included), or, with --signers,
    when the signature is missing, bad or by an unknown key; code and environment drift, leftover temp files and
    hidden files in the data folder are warnings (exit 0) unless --strict. Exit 2 for an incomplete run. Nothing in
    the run is written.

    The data is re-hashed when it is at most 256 MiB (or with --rehash); larger data is checked through the stat
    cache (path, size, mtime), which a file rewritten with its mtime restored (cp -p, rsync -t) passes. The output
    says which. verify finds accidents and edits that left MANIFEST.sha256 alone; it finds someone who rewrote
    MANIFEST.sha256 only on a signed run checked with --signers.

    Examples:

      medrun verify 3fa9c2

      medrun verify runs/ad-lite/train-3fa9c2d41b7e --strict --rehash

      medrun verify 3fa9c2 --signers allowed_signers --json
    """
    from medrun.artifacts.verify import failures, open_run, verify_run

    rd = open_run(runs_dir, run)
    report = verify_run(rd, rehash=rehash, signers=signers)
    bad = failures(report, strict)
    report["ok"] = not bad
    report["strict"] = strict
    if json_out:
        emit_json(report)
    else:
        _print_verify(report)
    if bad:
        raise VerifyError(f"run {rd.path} failed verification: " + "; ".join(bad))
    if not rd.is_complete():
        from medrun.errors import UsageError

        raise UsageError(f"run {rd.path} has intact files but is not complete (status: {report['status']})",
                         fix="finish it with the command in its run.json")
    return 0


def sign(
    run: Annotated[str, typer.Argument(help="a complete run: id, id prefix, or run directory")],
    key: Annotated[Path, typer.Option("--key", help="SSH private key (or a .pub whose key is in ssh-agent)")],
    runs_dir: RunsDir = Path("runs"),
    json_out: JsonOut = False,
) -> int:
    """Sign a complete run's MANIFEST.sha256 with your SSH key (ssh-keygen -Y sign, namespace medrun), writing
    MANIFEST.sha256.sig beside it. `medrun verify RUN --signers FILE` then also proves who sealed the run, which
    catches someone who edited a file and rewrote MANIFEST.sha256 to match. A run that does not verify is refused.

    FILE is an OpenSSH allowed-signers file, one line per signer: alice@lab namespaces="medrun" ssh-ed25519 AAAA…

    Examples:

      medrun sign 3fa9c2 --key ~/.ssh/id_ed25519

      medrun verify 3fa9c2 --signers ~/.config/medrun/allowed_signers
    """
    from medrun.artifacts.signing import sign as do_sign
    from medrun.artifacts.verify import open_run

    sig = do_sign(open_run(runs_dir, run), key)
    if json_out:
        emit_json({"signature": str(sig)})
    else:
        stdout().print(f"signed: {sig}", markup=False)
    return 0


def _print_verify(r: dict) -> None:
    con = stdout()
    c = r["categories"]
    mark = {"ok": "[green]ok[/]", "fail": "[red]FAIL[/]", "drift": "[yellow]warning[/]"}
    con.print(f"[bold]{r['run_dir']}[/]  ({r['pipeline']} {r['stage']}, id {str(r['id'])[:12]})")
    a = c["artifacts"]
    con.print(f"artifacts    {mark[a['status']]}  {a['files']} files in MANIFEST.sha256")
    for kind in ("changed", "removed", "added"):
        for rel in a[kind]:
            con.print(f"    {kind:8s} {rel}", markup=False)
    for rel in a.get("temp_files", []):
        con.print(f"    warning: temporary file in a sealed run (an interrupted write?): {rel}", markup=False)
    d = c["data"]
    con.print(f"data         {mark[d['status']]}" + (f"  {d['problem']}" if d.get("problem") else ""))
    for name, t in d["trees"].items():
        if t.get("missing_root"):
            con.print(f"    {name}: data folder {t['root']} is gone", markup=False)
            continue
        con.print(f"    {name}: {t['files']} files ({t['mode']}) under {t['root']}, {t['check']}", markup=False)
        if t.get("problem"):
            con.print(f"    {t['problem']}", markup=False)
        for kind in ("changed", "removed", "added"):
            for rel in t[kind]:
                con.print(f"    {kind:8s} {rel}", markup=False)
        for rel in t.get("hidden", []):
            con.print(f"    warning: hidden, not fingerprinted: {rel}", markup=False)
    k = c["code"]
    con.print(f"code         {mark[k['status']]}  recorded {str(k['recorded']['sha256'])[:12]}, "
              f"installed {str(k['current']['sha256'])[:12]}")
    for kind, files in (k.get("files") or {}).items():
        for rel in files:
            con.print(f"    {kind:8s} {rel}", markup=False)
    e = c["environment"]
    con.print(f"environment  {mark[e['status']]}" + (f"  {e['problem']}" if e.get("problem") else ""))
    for diff in e["differences"]:
        con.print(f"    {diff['key']}: {diff['recorded']} -> {diff['current']}", markup=False)
    sig = r.get("signature") or {}
    sig_text = {"none": "none (see `medrun sign`)", "unchecked": "present, not checked (use --signers FILE)",
                "ok": f"good, by {', '.join(sig.get('principals', []))}"}.get(sig.get("status"), sig.get("problem"))
    con.print("signature    " + (f"{mark[sig['status']]}  " if sig.get("status") in mark else ""), end="")
    con.print(sig_text, markup=False)
    con.print("[green]verified[/]" if r["ok"] else "[red]verification failed[/]")


# -- report ---------------------------------------------------------------------------------------------------
def report(
    runs: Annotated[list[str] | None, typer.Argument(help="runs to report (ids, prefixes or directories); "
                                                          "default: every run")] = None,
    pipeline: Annotated[str | None, typer.Option("--pipeline", "-p", help="only this pipeline's runs")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="the report folder (default: <runs-dir>/report)")] = None,
    compare: Annotated[bool, typer.Option("--compare", help="also write a compare page of the RUNS given (2 or "
                                                            "more); the index still lists every run")] = False,
    open_: Annotated[bool, typer.Option("--open", help="open the index in a web browser when done")] = False,
    no_verify: Annotated[bool, typer.Option("--no-verify", help="skip verifying each complete run")] = False,
    runs_dir: RunsDir = Path("runs"),
    json_out: JsonOut = False,
) -> int:
    """Write a static HTML report of the runs: an index (every run with its status, headline metric beside the
    paper's, verification, age and wall time; a paper-reproduction table), a page per run (metrics beside the
    paper, learning curves, figures, per-case table worst first, child runs with their 95 % intervals,
    provenance, the manifest with what differs from the default marked) and compare pages.

    The folder needs no server and no network: open index.html from disk. Running it again rewrites only the
    pages whose runs changed. It writes only into a new or empty folder, or one it wrote before.

    Examples:

      medrun report --open

      medrun report --pipeline ad-lite --out ad-lite-report

      medrun report --compare 3fa9c2 77b1e0
    """
    from medrun.artifacts.report.render import build
    from medrun.artifacts.verify import open_run
    from medrun.errors import UsageError
    from medrun.pipelines.runner import default_manifest

    if compare and len(runs or []) < 2:
        raise UsageError("--compare needs two or more runs", fix="medrun report --compare RUN_A RUN_B")
    if not runs_dir.is_dir():
        raise UsageError(f"runs folder {runs_dir} does not exist", fix="pass --runs-dir or set MEDRUN_RUNS")
    picked = [open_run(runs_dir, r).path for r in runs or []]
    result = build(runs_dir, out if out is not None else runs_dir / "report", select=None if compare else picked,
                   pipeline=pipeline, compare=picked if compare else None, verify=not no_verify,
                   defaults=default_manifest)
    if json_out:
        emit_json(result)
    else:
        stdout().print(f"report of {result['runs']} runs: {result['index']} ({len(result['written'])} pages "
                       f"written, {result['unchanged']} unchanged, {result['seconds']:.1f} s)", markup=False)
        for rel in result["compare"]:
            stdout().print(f"compare page: {Path(result['out']) / rel}", markup=False)
    if open_:
        import webbrowser

        webbrowser.open(Path(result["index"]).resolve().as_uri())
    return 0


# -- runs list / show / diff / compare ------------------------------------------------------------------------
def _index(runs_dir: Path):
    from medrun.artifacts.index import Index

    return Index(runs_dir)


def _table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """A rich table on a terminal; plain aligned columns (never truncated) in pipes, logs and MEDRUN_PLAIN=1."""
    import os
    import sys

    if sys.stdout.isatty() and os.environ.get("MEDRUN_PLAIN") is None:
        from rich.table import Table

        table = Table(title=title)
        for col in columns:
            table.add_column(col)
        for row in rows:
            table.add_row(*row)
        stdout().print(table)
        return
    widths = [max(len(str(x)) for x in col) for col in zip(columns, *rows, strict=True)]
    print(title)
    for row in (columns, *rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip())


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return "" if v is None else str(v)


@runs_app.command("list")
def runs_list(
    pipeline: Annotated[str | None, typer.Option("--pipeline", "-p", help="only this pipeline")] = None,
    stage: Annotated[str | None, typer.Option("--stage", "-s", help="only this stage")] = None,
    status: Annotated[str | None, typer.Option("--status", help="complete, running, failed, interrupted, stale, "
                                               "incomplete")] = None,
    runs_dir: RunsDir = Path("runs"),
    json_out: JsonOut = False,
) -> int:
    """List runs, newest first, from the index (<runs>/.index.sqlite, refreshed from the run.json files).

    A run whose run.json says running is shown as running only while a process holds its lock; interrupted when
    nobody does and its pid is gone (killed, or its last status write failed: the same command resumes it); stale
    when nobody holds the lock but its pid belongs to a live process (most likely a reused pid).

    Examples:

      medrun runs list

      medrun runs list --pipeline ad-lite --stage train --status complete

      medrun runs list --json
    """
    idx = _index(runs_dir)
    try:
        rows = idx.list(pipeline, stage, status)
    finally:
        idx.close()
    out = [
        {
            "id": r["id"],
            "pipeline": r["pipeline"],
            "stage": r["stage"],
            "status": r["status"],
            "dataset": r["dataset"],
            "started": r["started"],
            "ended": r["ended"],
            "run_dir": r["run_dir"],
            "metrics": r["metrics"],
        }
        for r in rows
    ]
    if json_out:
        emit_json({"runs_dir": str(runs_dir), "runs": out})
        return 0
    if not out:
        stdout().print(f"no runs under {runs_dir}" + (" matching the filters" if pipeline or stage or status else ""))
        return 0
    rows = []
    for r in out:
        head = headline(r["metrics"])
        rows.append([str(r["id"])[:12], _fmt(r["pipeline"]), _fmt(r["stage"]), _fmt(r["status"]), _fmt(r["dataset"]),
                     _fmt(r["started"]), f"{head[0]}={_fmt(head[1])}" if head else ""])
    _table(f"runs in {runs_dir}", ["id", "pipeline", "stage", "status", "dataset", "started", "headline metric"], rows)
    return 0


def headline(metrics: dict) -> tuple[str, float] | None:
    """The run's headline metric: Dice for segmentation, accuracy or AUC for classification …, never a count."""
    from medrun.artifacts.report.data import headline as pick

    return pick(metrics)


@runs_app.command("show")
def runs_show(
    run: Annotated[str, typer.Argument(help="run id, id prefix, or run directory")],
    runs_dir: RunsDir = Path("runs"),
    json_out: JsonOut = False,
) -> int:
    """Show one run as its report page does: status, provenance, the command that runs it again, and its
    metrics beside the paper's.

    Examples:

      medrun runs show 3fa9c2

      medrun runs show runs/ad-lite/train-3fa9c2d41b7e --json
    """
    from medrun.artifacts.index import flatten
    from medrun.artifacts.report.data import Run, run_summary
    from medrun.artifacts.verify import open_run

    rd = open_run(runs_dir, run)
    r = Run(rd.path, Path(runs_dir))
    s = run_summary(r)
    out = {"run_dir": str(rd.path), "complete": rd.is_complete(), "status": s["status"], "run": r.info,
           "metrics": r.metrics, "summary": s}
    if json_out:
        emit_json(out)
        return 0
    con = stdout()
    con.print(f"[bold]{rd.path}[/]  {'[green]complete[/]' if out['complete'] else '[yellow]not complete[/]'}")
    status = s["status"] if s["status"] == s["recorded_status"] else f"{s['status']} (run.json: {s['recorded_status']})"
    for key, val in (
        ("id", s["id"]), ("pipeline", s["pipeline"]), ("stage", s["stage"]), ("status", status),
        ("dataset", s["dataset"]), ("fixture", s["fixture"]), ("parent", s["parent"]), ("started", s["started"]),
        ("ended", s["ended"]), ("wall (s)", s["wall_seconds"]), ("seed", s["seed"]),
        ("determinism", s["determinism"]), ("code", f"{s['code_sha256']} (git {s['git_commit']})"),
        ("data", s["data_sha256"]), ("environment", s["env_sha256"]), ("command", s["command"]),
        ("run again", s["reproduce"]),
    ):
        con.print(f"  {key:12s} {_fmt(val)}", markup=False)
    paper = s["paper"]
    rows = s["metrics_vs_paper"]
    if rows:
        title = "metrics" + (f" beside the paper ({paper['table'] or paper['card']})" if paper["expect"] else "")
        _table(title, ["metric", "run", "sd", "paper", "Δ (run − paper)"],
               [[x["metric"], _fmt(x["run"]), _fmt(x["sd"]), _fmt(x["paper"]),
                 "" if x["delta"] is None else f"{x['delta']:+.4f}"] for x in rows])
    others = {k: v for k, v in flatten(r.metrics).items() if not isinstance(v, (int, float)) or isinstance(v, bool)}
    for k, v in others.items():
        con.print(f"  {k:24s} {_fmt(v)}", markup=False)
    return 0


@runs_app.command("diff")
def runs_diff(
    a: Annotated[str, typer.Argument(help="first run (id, prefix or directory)")],
    b: Annotated[str, typer.Argument(help="second run")],
    runs_dir: RunsDir = Path("runs"),
    json_out: JsonOut = False,
) -> int:
    """Differences between two runs: manifest (dotted keys), metrics, environment packages, data and code.

    Examples:

      medrun runs diff 3fa9c2 77b1e0

      medrun runs diff 3fa9c2 77b1e0 --json
    """
    from medrun.artifacts.index import diff_runs
    from medrun.artifacts.verify import open_run

    d = diff_runs(open_run(runs_dir, a), open_run(runs_dir, b))
    if json_out:
        emit_json(d)
        return 0
    con = stdout()
    con.print(f"[bold]a[/] {d['a']['run_dir']}\n[bold]b[/] {d['b']['run_dir']}")
    for section in ("manifest", "metrics", "environment"):
        con.print(f"[bold]{section}[/]" + ("  (same)" if not d[section] else ""))
        for x in d[section]:
            con.print(f"  {x['key']}: {_fmt(x['a'])} -> {_fmt(x['b'])}", markup=False)
    data = d["data"]
    con.print(
        "[bold]data[/]  "
        + ("(same fingerprint)" if data["same"] else f"{_fmt(data['a'])[:12]} -> {_fmt(data['b'])[:12]}")
    )
    for name, f in data["files"].items():
        if f["changed"] or f["only_a"] or f["only_b"]:
            con.print(
                f"  {name}: {len(f['changed'])} changed, {len(f['only_a'])} only in a, {len(f['only_b'])} only in b",
                markup=False,
            )
    code = d["code"]
    con.print(
        "[bold]code[/]  "
        + ("(same fingerprint)" if code["same"] else f"{_fmt(code['a'])[:12]} -> {_fmt(code['b'])[:12]}")
    )
    return 0


@runs_app.command("compare")
def runs_compare(
    runs: Annotated[list[str], typer.Argument(help="runs (ids, prefixes or directories)")],
    runs_dir: RunsDir = Path("runs"),
    json_out: JsonOut = False,
) -> int:
    """A table of the runs' metrics, one row per run.

    Examples:

      medrun runs compare 3fa9c2 77b1e0 a01c33

      medrun runs compare 3fa9c2 77b1e0 --json
    """
    from medrun.artifacts.index import metrics_table
    from medrun.artifacts.verify import open_run

    t = metrics_table([open_run(runs_dir, r) for r in runs])
    if json_out:
        emit_json(t)
        return 0
    _table(
        "metrics",
        ["id", "pipeline", "stage", *t["columns"]],
        [
            [
                str(r["id"])[:12],
                _fmt(r["pipeline"]),
                _fmt(r["stage"]),
                *[_fmt(r["metrics"].get(c)) for c in t["columns"]],
            ]
            for r in t["rows"]
        ],
    )
    return 0


# -- rerun ----------------------------------------------------------------------------------------------------
def rerun(
    run: Annotated[str, typer.Argument(help="run id, id prefix, or run directory")],
    compare: Annotated[bool, typer.Option("--compare", help="compare metrics and model.safetensors with the original; "
                                          "exit 5 unless IDENTICAL")] = False,
    runs_dir: RunsDir = Path("runs"),
    json_out: JsonOut = False,
) -> int:
    """Run a finished run's stage again from its own manifest.yaml, into <runs>/.reruns/<time>/ (the original is
    never touched), and with --compare say IDENTICAL or list every difference in metrics and weights.

    Warns when the installed code or the data no longer match the original's fingerprints. An incomplete run is
    refused (exit 2).

    Examples:

      medrun rerun 3fa9c2 --compare

      medrun rerun runs/ad-lite/train-3fa9c2d41b7e --compare --json
    """
    from medrun.artifacts.verify import open_run
    from medrun.pipelines.runner import rerun as do_rerun

    from .output import log

    original = open_run(runs_dir, run)
    out = do_rerun(original, os.environ.get("MEDRUN_ARGV", "").split(), compare=compare, log=log)
    warnings = out["warnings"]
    if json_out:
        emit_json(out)
    else:
        con = stdout()
        con.print(f"rerun of {original.path}\n  -> {out['rerun']}", markup=False)
        for w in warnings:
            con.print(f"[yellow]warning:[/] {w}")
        if compare:
            c = out["comparison"]
            if c["identical"]:
                con.print("[green]IDENTICAL[/]: metrics and checkpoints/model.safetensors match bit for bit")
            for d in c["differences"]:
                con.print(f"  {d['what']}: {_fmt(d['original'])} -> {_fmt(d['rerun'])}", markup=False)
            for d in c["timings"]:
                con.print(f"  (timing, not compared) {d['what']}: {_fmt(d['original'])} -> {_fmt(d['rerun'])}",
                          markup=False)
    if compare and not out["comparison"]["identical"]:
        raise VerifyError(f"rerun differs from {original.path} in {len(out['comparison']['differences'])} place(s)",
                          fix=f"see the list above; the rerun is in {out['rerun']}")
    return 0


# -- a shared run store ---------------------------------------------------------------------------------------
@runs_app.command("push")
def push_cmd(
    runs: Annotated[list[str], typer.Argument(help="complete runs: ids, id prefixes or run directories")],
    to: Annotated[str, typer.Option("--to", envvar="MEDRUN_STORE", help="the store: a folder or an fsspec URL "
                                    "(s3://…, gs://…, ssh://host/path)")],
    runs_dir: RunsDir = Path("runs"),
    json_out: JsonOut = False,
) -> int:
    """Copy complete runs into a shared run store, verified first, under <store>/<pipeline>/<stage>-<id12>/
    (written under a temporary name and renamed: a half copy is never visible). A run already stored is checked,
    not copied again.

    Examples:

      medrun runs push 3fa9c2 --to /shared/medrun-store

      medrun runs push 3fa9c2 77b1e0 --to s3://lab-bucket/medrun
    """
    from medrun.artifacts.store import push
    from medrun.artifacts.verify import open_run

    from .output import log

    todo = [open_run(runs_dir, r) for r in runs]  # every name resolves before anything is copied
    out = [push(rd, to, log=lambda *_: None) for rd in todo]
    if json_out:
        emit_json(out)
    else:
        for o in out:
            log(f"{o['status']}: {o['run_dir']} -> {o['stored']}")
    return 0


@runs_app.command("pull")
def pull_cmd(
    runs: Annotated[list[str], typer.Argument(help="stored runs: ids, id prefixes or <pipeline>/<stage>-<id12>")],
    from_: Annotated[str, typer.Option("--from", envvar="MEDRUN_STORE", help="the store: a folder or an fsspec URL")],
    runs_dir: RunsDir = Path("runs"),
    json_out: JsonOut = False,
) -> int:
    """Copy complete runs from a shared run store into the runs folder, every file re-hashed against the run's
    MANIFEST.sha256 on the way in (a damaged copy is refused with exit 5 and nothing is left behind).

    Examples:

      medrun runs pull 3fa9c2 --from /shared/medrun-store

      medrun runs pull ad-lite/train-3fa9c2d41b7e --from s3://lab-bucket/medrun
    """
    from medrun.artifacts.store import pull

    from .output import log

    out = [pull(r, from_, runs_dir, log=lambda *_: None) for r in runs]
    if json_out:
        emit_json(out)
    else:
        for o in out:
            log(f"{o['status']}: {o['stored']} -> {o['run_dir']}")
    return 0
