"""Provenance commands: ``verify``, ``rerun`` and the ``runs`` group (list, show, diff, compare).

None of them imports torch, Lightning or MONAI except ``rerun``, which runs a stage.
"""

from __future__ import annotations

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
    app.add_typer(runs_app, name="runs")


# -- verify ---------------------------------------------------------------------------------------------------
def verify(
    run: Annotated[str, typer.Argument(help="run id, id prefix, or run directory")],
    strict: Annotated[bool, typer.Option("--strict", help="code and environment drift fail too (exit 5)")] = False,
    runs_dir: RunsDir = Path("runs"),
    json_out: JsonOut = False,
) -> int:
    """Check a run: re-hash its files against MANIFEST.sha256, re-fingerprint its data, compare code and environment.

    Exit 5 when an artifact or the data changed, was removed or added; code and environment drift are warnings
    (exit 0) unless --strict. Exit 2 for an incomplete run. Nothing is written.

    Examples:

      medrun verify 3fa9c2

      medrun verify runs/ad-lite/train-3fa9c2d41b7e --strict

      medrun verify 3fa9c2 --json
    """
    from medrun.artifacts.verify import failures, open_run, verify_run

    rd = open_run(runs_dir, run)
    report = verify_run(rd)
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
    d = c["data"]
    con.print(f"data         {mark[d['status']]}" + (f"  {d['problem']}" if d.get("problem") else ""))
    for name, t in d["trees"].items():
        if t.get("missing_root"):
            con.print(f"    {name}: data folder {t['root']} is gone", markup=False)
            continue
        con.print(f"    {name}: {t['files']} files ({t['mode']}) under {t['root']}", markup=False)
        for kind in ("changed", "removed", "added"):
            for rel in t[kind]:
                con.print(f"    {kind:8s} {rel}", markup=False)
    k = c["code"]
    con.print(f"code         {mark[k['status']]}  recorded {str(k['recorded']['sha256'])[:12]}, "
              f"installed {str(k['current']['sha256'])[:12]}")
    e = c["environment"]
    con.print(f"environment  {mark[e['status']]}" + (f"  {e['problem']}" if e.get("problem") else ""))
    for diff in e["differences"]:
        con.print(f"    {diff['key']}: {diff['recorded']} -> {diff['current']}", markup=False)
    con.print("[green]verified[/]" if r["ok"] else "[red]verification failed[/]")
