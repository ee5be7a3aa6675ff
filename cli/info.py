"""Commands that inspect: list, show, validate, fixture, doctor, smoke."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer

from medrun.errors import MedrunError, UsageError, VerifyError

from .output import emit_json, log, stdout


def register(app: typer.Typer) -> None:
    for fn in (list_cmd, show, validate, fixture, doctor, smoke):
        name = fn.__name__.removesuffix("_cmd")
        app.command(name=name, help=fn.__doc__, no_args_is_help=name in ("validate", "fixture"))(fn)


def list_cmd(json_out: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> int:
    """List pipelines (slug, paper, datasets, stages) and datasets.

    Examples:

      medrun list

      medrun list --json
    """
    from rich.markup import escape

    from medrun.pipelines import dataset_registry, own_data, registry

    known = dataset_registry()
    pipes = [{"slug": s.slug, "title": s.title, "paper": s.paper, "card": s.card, "datasets": list(s.datasets),
              "stages": list(s.stages), "own_data": own_data(s, known)}
             for s in sorted(registry().values(), key=lambda s: s.slug)]
    data = [{"name": d.name, "title": d.title, "layout": d.layout, "source": d.source}
            for d in sorted(known.values(), key=lambda d: d.name)]
    if json_out:
        emit_json({"pipelines": pipes, "datasets": data})
        return 0
    con = stdout()
    con.print("[bold]Pipelines[/]")
    for p in pipes:
        con.print(
            f"  [cyan]{p['slug']}[/]  {p['title']} — datasets: {', '.join(p['datasets'])}; "
            f"stages: {', '.join(p['stages'])}"
        )
        con.print(f"      {p['paper']}")
        own = p["own_data"]
        con.print(f"      own data: --dataset {own['dataset']} --data-dir DIR, DIR = {escape(own['layout'])}")
    con.print("[bold]Datasets[/]")
    for d in data:
        con.print(f"  [cyan]{d['name']}[/]  {escape(d['title'])}  layout: {escape(d['layout'])}")
    return 0


def show(
    pipeline: Annotated[str | None, typer.Argument(help="pipeline slug")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", "-d")] = None,
    manifest: Annotated[Path | None, typer.Option("--manifest", "-m")] = None,
    override: Annotated[list[str] | None, typer.Option("--override", "-o", help="key=value; repeatable")] = None,
    fixture: Annotated[bool, typer.Option("--fixture", help="the fixture manifest and data")] = False,
    data_dir: Annotated[Path | None, typer.Option()] = None,
    runs_dir: Annotated[Path, typer.Option(envvar="MEDRUN_RUNS")] = Path("runs"),
    stage: Annotated[str, typer.Option(help="the stage whose run id to show")] = "train",
    schema: Annotated[bool, typer.Option("--schema", help="print the manifest's JSON Schema")] = False,
    model_summary: Annotated[
        bool, typer.Option("--model-summary", help="build the model; print parameter counts")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> int:
    """Show the resolved manifest and the run id it would get; or its JSON Schema; or the model's size.

    Examples:

      medrun show ad-lite --dataset oasis

      medrun show ad-lite --dataset ad -o model.pcb=false --model-summary --json

      medrun show ad-lite --schema
    """
    import yaml

    from medrun.pipelines import get
    from medrun.pipelines.runner import Request, load_manifest

    if schema:
        if pipeline:
            cls = get(pipeline).manifest_cls()
        else:
            from medrun.manifests.schema import Manifest as cls
        emit_json(cls.model_json_schema())
        return 0
    if not pipeline:
        raise UsageError("which pipeline?", fix="medrun show PIPELINE --dataset NAME (see `medrun list`)")
    spec = get(pipeline)
    req = Request(pipeline=pipeline, stage=stage, dataset=dataset, manifest=manifest, overrides=override or [],
                  data_dir=data_dir, fixture=fixture, runs_dir=runs_dir)
    m, resolved = load_manifest(req, spec)
    if model_summary:
        from medrun.pipelines.runner import build_model
        from medrun.pipelines.training import count_params

        counts = count_params(build_model(spec, m))
        if json_out:
            emit_json(counts)
        else:
            stdout().print(
                f"{spec.slug}: {counts['params_total']:,} parameters, {counts['params_trainable']:,} trainable"
            )
        return 0
    from medrun.pipelines import runner

    run_id, note, code = None, None, None
    try:
        p = runner.plan(req, log=log)
        run_id, code = p.run_id, p.code_fp
    except MedrunError as e:
        note = f"run id needs the data: {e.line()}"
    code = code or runner.stage_code(spec)  # the code part of the id needs no data
    out = m.model_dump(mode="json")
    if json_out:
        emit_json({"manifest": out, "source": str(resolved.source), "stage": stage, "run_id": run_id, "note": note,
                   "code": {"sha256": code["sha256"], "files": code["files"]}})
        return 0
    con = stdout()
    con.print(f"# {resolved.source}")
    con.print(yaml.safe_dump(out, sort_keys=False).rstrip(), markup=False)
    con.print(f"# {stage} run id: {run_id}" if run_id else f"# {note}", markup=False)
    con.print(f"# code fingerprint: {code['sha256'][:12]} over {len(code['files'])} source files "
              "(see --json for the list)", markup=False)
    return 0


def validate(files: Annotated[list[Path], typer.Argument(help="manifest files")]) -> int:
    """Validate manifests against the envelope and their pipeline's schema. Exit 0 if all are valid, else 2.

    Examples:

      medrun validate manifests/ad-lite/oasis.yaml

      medrun validate manifests/*/*.yaml
    """
    from medrun import manifests
    from medrun.pipelines import get

    bad = 0
    for f in files:
        try:
            resolved = manifests.load_file(f)
            slug = resolved.data.get("pipeline")
            if not slug:
                raise UsageError(
                    f"{f}: missing required key 'pipeline'", fix="add `pipeline: <slug>` (see `medrun list`)"
                )
            manifests.validate(resolved, get(slug).manifest_cls())
            stdout().print(f"[green]ok[/]     {f}")
        except MedrunError as e:
            bad += 1
            stdout().print(f"[red]error[/]  {e.line()}", markup=True)
    return 2 if bad else 0


def fixture(
    dataset: Annotated[str, typer.Argument(help="dataset name (see `medrun list`)")],
    out: Annotated[Path, typer.Option("--out", help="a new or empty folder to write it as")],
    seed: Annotated[int, typer.Option()] = 0,
    force: Annotated[bool, typer.Option("--force", help="replace an earlier fixture written there by medrun")] = False,
) -> int:
    """Write a dataset's miniature in its public layout (the same files, names and quirks, a learnable signal).

    It is generated beside --out and renamed into place; a non-empty --out is refused, and --force replaces only an
    earlier fixture (a folder holding .medrun-fixture.json), never other files.

    Examples:

      medrun fixture oasis --out /tmp/oasis-mini
    """
    from medrun.artifacts.replace import FIXTURE_MARKER, check_target
    from medrun.pipelines import dataset_info
    from medrun.pipelines.runner import write_fixture

    dataset_info(dataset)  # an unknown name or a refused --out fails before anything is written
    check_target(out, marker=FIXTURE_MARKER, force=force)
    t0 = time.perf_counter()
    log(f"writing the {dataset} fixture to {out}")
    root = write_fixture(dataset, out, seed, force=force)
    n = sum(1 for p in root.rglob("*") if p.is_file())
    stdout().print(f"{n} files in {time.perf_counter() - t0:.1f} s; use --data-dir {root}")
    return 0


def doctor(json_out: Annotated[bool, typer.Option("--json")] = False) -> int:
    """Check python, torch, CUDA and devices, optional packages, the runs and data folders.

    Examples:

      medrun doctor
    """
    import importlib.metadata as md
    import platform
    import sys

    report: dict = {"python": sys.version.split()[0], "platform": platform.platform()}
    try:
        import torch

        report["torch"] = torch.__version__
        report["cuda"] = {"available": torch.cuda.is_available(), "version": torch.version.cuda,
                          "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}
        report["cpu_threads"] = torch.get_num_threads()
        report["bf16_cpu"] = True
    except ImportError:
        report["torch"] = None
    pkgs = {}
    # other distributions that provide a package (mlflow-skinny is the tracking client without the server)
    also = {"monai": ("monai-weekly",), "mlflow": ("mlflow-skinny",)}
    for name in ("lightning", "monai", "torchmetrics", "captum", "peft", "diffusers", "gudhi", "pot", "open3d",
                 "scikit-image", "pandas", "safetensors", "pydicom", "faiss-cpu", "kornia", "mlflow"):
        pkgs[name] = None
        for dist in (name, *also.get(name, ())):
            try:
                pkgs[name] = md.version(dist) + ("" if dist == name else f" ({dist})")
                break
            except md.PackageNotFoundError:
                continue
    report["packages"] = pkgs
    runs = Path(os.environ.get("MEDRUN_RUNS", "runs"))
    report["runs_dir"] = {"path": str(runs.resolve()), "writable": _writable(runs)}
    data = os.environ.get("MEDRUN_DATA")
    report["data_dir"] = {"MEDRUN_DATA": data, "exists": bool(data) and Path(data).is_dir()}
    from medrun.pipelines.launch import usable

    report["launchers"] = usable()
    if json_out:
        emit_json(report)
        return 0
    con = stdout()
    con.print(f"python {report['python']}  ({report['platform']})")
    if report["torch"]:
        cuda = report["cuda"]
        con.print(
            f"torch {report['torch']}  CUDA: {'yes ' + str(cuda['devices']) if cuda['available'] else 'no (CPU only)'}"
            f"  CPU threads {report['cpu_threads']}"
        )
    else:
        con.print("[red]torch is not installed[/] — run `make setup`")
    for k, v in pkgs.items():
        con.print(f"  {k:14s} {v or '[dim]not installed[/]'}")
    writable = "writable" if report["runs_dir"]["writable"] else "[red]not writable[/]"
    con.print(f"runs dir {report['runs_dir']['path']} ({writable})")
    con.print(f"data dir MEDRUN_DATA={data or '[dim]unset[/] (manifests default to ./data)'}")
    con.print("launchers (--launcher): " + "  ".join(f"{k}: {v}" for k, v in report["launchers"].items()))
    return 0 if report["torch"] else 4


def _writable(path: Path) -> bool:
    p = path if path.exists() else path.parent if path.parent.exists() else Path(".")
    return os.access(p, os.W_OK)


def smoke(
    pipelines: Annotated[list[str] | None, typer.Argument(help="pipelines to smoke-test (default: all)")] = None,
    runs_dir: Annotated[Path, typer.Option(envvar="MEDRUN_RUNS")] = Path("runs"),
    force: Annotated[bool, typer.Option("--force")] = False,
    changed_since: Annotated[str | None, typer.Option(
        "--changed-since", metavar="GIT_REF",
        help="only pipelines whose covered source files or manifests differ from this git ref")] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
    launcher: Annotated[str, typer.Option(envvar="MEDRUN_LAUNCHER", help="local (one run after another) or local:N "
                                          "(N runs at once in processes of their own), slurm, submitit-local")
                        ] = "local",
) -> int:
    """Run every fixture manifest (`<dataset>.fixture.yaml`) and check the card's thresholds; print a table.

    Complete runs with the same manifest, code and data are reused (the table says "reused"), so a second smoke
    over the same runs folder reruns only the pipelines whose code, data or manifests changed.

    Examples:

      medrun smoke

      medrun smoke ad-lite sc-unext

      medrun smoke --changed-since origin/main --json > smoke.json

      medrun smoke --launcher local:2
    """
    from medrun.pipelines import smoke as smoke_runs
    from medrun.pipelines.launch import parse

    parse(launcher)  # a bad --launcher fails before anything runs

    selected, skipped = pipelines, []
    if changed_since is not None:
        from medrun.pipelines import registry

        selected = smoke_runs.affected(pipelines, smoke_runs.changed_files(changed_since))
        skipped = [s for s in (pipelines or sorted(registry())) if s not in selected]
        log(f"smoke: {len(skipped)} pipeline(s) unchanged since {changed_since}, not run: {', '.join(skipped) or '-'}")
    rows, failed = smoke_runs.run(selected, runs_dir, force, log=log, launcher=launcher) if selected != [] else ([], 0)
    if json_out:
        emit_json({"rows": rows, "failed": failed, "changed_since": changed_since, "skipped": skipped})
    else:
        from rich.table import Table

        table = Table(title="medrun smoke")
        for col in ("pipeline", "dataset", "stage", "metric", "value", "threshold", "pass", "seconds"):
            table.add_column(col)
        for r in rows:
            v = r["value"]
            table.add_row(r["pipeline"], r["dataset"], r["stage"], r["metric"],
                          f"{v:.4f}" if isinstance(v, float) else str(v), r["threshold"],
                          "[green]yes[/]" if r["pass"] else "[red]NO[/]",
                          "reused" if r["reused"] else str(r["seconds"]))
        stdout().print(table)
        reused = len({r["run_dir"] for r in rows if r["reused"]})
        stdout().print(f"{reused} run(s) reused, {len({r['run_dir'] for r in rows}) - reused} ran", markup=False)
    if failed:
        raise VerifyError(f"{failed} smoke threshold(s) not met", fix="see the table above and each run's paper.md")
    return 0
