"""Stage commands: ``medrun train|eval|predict|cv|… PIPELINE --dataset NAME [options]``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated

import typer

from .output import emit_json, log, stdout


def register(app: typer.Typer) -> None:
    """One command per stage any pipeline declares; help and examples come from the pipelines' specs, so a new
    paper edits no shared file."""
    from medrun.pipelines import CORE_STAGES, registry, stage_help

    specs = list(registry().values())
    extra = sorted({s for spec in specs for s in spec.stages} - set(CORE_STAGES))
    for verb in [*CORE_STAGES, *extra]:
        help_text, examples = stage_help(verb, specs)
        shown = "\n\n  ".join(examples[:3]) or f"medrun {verb} PIPELINE --dataset NAME --fixture"
        app.command(name=verb, help=f"{help_text}\n\nExamples:\n\n  {shown}", no_args_is_help=True)(_command(verb))


def _command(verb: str):
    def command(
        pipeline: Annotated[str, typer.Argument(help="pipeline slug (see `medrun list`)")],
        dataset: Annotated[
            str | None, typer.Option("--dataset", "-d", help="dataset name; picks manifests/<pipeline>/<dataset>.yaml")
        ] = None,
        manifest: Annotated[
            Path | None, typer.Option("--manifest", "-m", help="a manifest file instead of the repository's")
        ] = None,
        override: Annotated[
            list[str] | None, typer.Option("--override", "-o", help="key=value, typed as YAML; repeatable")
        ] = None,
        data_dir: Annotated[
            Path | None, typer.Option(help="the dataset's folder in its public layout (sets dataset.root)")
        ] = None,
        fixture: Annotated[
            bool, typer.Option("--fixture", help="generate the dataset's miniature into a cache and run on it")
        ] = False,
        runs_dir: Annotated[Path, typer.Option(envvar="MEDRUN_RUNS", help="where run directories go")] = Path("runs"),
        seed: Annotated[int | None, typer.Option(help="overrides the manifest's seed")] = None,
        seeds: Annotated[
            str | None, typer.Option(help="replicates: one run per seed (e.g. 0,1,2) plus a summary run")
        ] = None,
        force: Annotated[
            bool, typer.Option("--force", help="run again even if a complete run with this id exists")
        ] = False,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="resolve, validate, fingerprint, build the model; run nothing")
        ] = False,
        run: Annotated[
            str | None,
            typer.Option(
                "--run",
                help="stages on a finished run (eval, predict, explain …): that run's id, id prefix or directory",
            ),
        ] = None,
        checkpoint: Annotated[
            Path | None, typer.Option(help="stages on a finished run: a weights file instead of the run")
        ] = None,
        split: Annotated[str | None, typer.Option(help="the split to evaluate (sets eval.split)")] = None,
        accelerator: Annotated[str | None, typer.Option(help="trainer.accelerator: cpu, gpu, auto …")] = None,
        devices: Annotated[str | None, typer.Option(help="trainer.devices: a count, a list like 0,1, or auto")] = None,
        strategy: Annotated[str | None, typer.Option(help="trainer.strategy: auto, ddp, fsdp …")] = None,
        precision: Annotated[
            str | None, typer.Option(help="trainer.precision: 32-true, bf16-mixed, 16-mixed …")
        ] = None,
        num_nodes: Annotated[int | None, typer.Option(help="trainer.num_nodes")] = None,
        json_out: Annotated[bool, typer.Option("--json", help="print one JSON object at the end")] = False,
        log_to: Annotated[
            list[str] | None,
            typer.Option(
                "--log",
                help="also log to an experiment tracker: mlflow (local store <runs>/.mlruns unless "
                "MLFLOW_TRACKING_URI)",
            ),
        ] = None,
        launcher: Annotated[
            str,
            typer.Option(envvar="MEDRUN_LAUNCHER", help="how child runs (folds, seeds, variants) run: local (one after "
                         "another), local:N (N processes at once), slurm, submitit-local; never changes a run id"),
        ] = "local",
        store: Annotated[
            str | None,
            typer.Option(envvar="MEDRUN_STORE", help="a shared run store (folder or fsspec URL): a complete run of "
                         "the same id there is pulled and reused instead of computed"),
        ] = None,
        detach: Annotated[
            bool, typer.Option("--detach", help="check and plan here, then run in the background, detached from "
                               "this terminal (survives logging out); prints the run folder and the log file")
        ] = False,
    ) -> int:
        from medrun.pipelines.runner import Request

        req = Request(
            pipeline=pipeline, stage=verb, dataset=dataset, manifest=manifest, overrides=override or [],
            data_dir=data_dir, fixture=fixture, runs_dir=runs_dir, seed=seed, force=force, dry_run=dry_run,
            trainer={"accelerator": accelerator, "devices": _devices(devices), "strategy": strategy,
                     "precision": precision, "num_nodes": num_nodes},
            run_ref=run, checkpoint=checkpoint, split=split, argv=os.environ.get("MEDRUN_ARGV", "").split(),
            log_to=tuple(log_to or ()), launcher=launcher, store=store,
        )
        return detached(req, json_out, seeds) if detach else run_request(req, json_out, seeds)

    command.__name__ = verb.replace("-", "_")
    return command


def _devices(text: str | None):
    if text is None or text == "auto":
        return text
    if text.isdigit():
        return int(text)
    if all(p.strip().isdigit() for p in text.split(",")):
        return [int(p) for p in text.split(",")]
    return text


def detached(req, json_out: bool, seeds: str | None = None) -> int:
    """``--detach``: everything that can fail fast (manifest, data layout and fingerprint, the trainer section, the
    launcher) fails here, in the terminal; then the same command without ``--detach`` starts in a new session with
    its output in ``<runs>/<pipeline>/.detached/<stage>-<time>.log``. Interrupted or killed later, it resumes like
    any run: run the same command again."""
    import subprocess
    import sys
    from datetime import datetime

    from medrun.errors import UsageError
    from medrun.pipelines import replicates, runner
    from medrun.pipelines.launch import parse

    if req.dry_run:
        raise UsageError("--detach and --dry-run do not go together", fix="drop one of them")
    parse(req.launcher)
    seed_list = replicates.parse_seeds(seeds) if seeds else runner.manifest_seeds(req)
    plan = None if seed_list else runner.plan(req, log=log)
    if plan is not None and getattr(plan.manifest, "trainer", None) is not None:
        from medrun.pipelines.training import check_trainer

        check_trainer(plan.manifest.trainer)
    folder = Path(req.runs_dir) / req.pipeline / ".detached"
    folder.mkdir(parents=True, exist_ok=True)
    logfile = folder / f"{req.stage}-{datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}.log"
    argv = [a for a in json.loads(os.environ["MEDRUN_ARGV_JSON"]) if a != "--detach"]
    with open(logfile, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "medrun.cli.main", *argv], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "MEDRUN_PLAIN": "1"})
    result = {"status": "detached", "pid": proc.pid, "log": str(logfile),
              "run_id": plan.run_id if plan else None, "run_dir": str(plan.path) if plan else None}
    if json_out:
        emit_json(result)
    else:
        where = f"run folder {plan.path}" if plan else f"replicates of seeds {seed_list}"
        stdout().print(f"started in the background (pid {proc.pid}): {where}\n  output: {logfile}\n"
                       f"  follow it with: tail -f {logfile}   (or medrun runs list)", markup=False)
    return 0


def run_request(req, json_out: bool, seeds: str | None = None) -> int:
    from medrun.pipelines import replicates, runner
    from medrun.pipelines.launch import parse

    parse(req.launcher)  # a bad --launcher fails before anything is planned
    t0 = time.perf_counter()
    seed_list = replicates.parse_seeds(seeds) if seeds else runner.manifest_seeds(req)
    if seed_list and not req.dry_run:
        result = replicates.run(req, seed_list, log=log)
        result["seconds"] = round(time.perf_counter() - t0, 2)
        if runner.process_rank() == 0:
            emit_json(result) if json_out else _summary(result)
        return 0
    plan = runner.plan(req, log=log)
    if req.dry_run:
        return _dry_run(plan, json_out)
    try:
        result = runner.execute(plan, log=log)
    except KeyboardInterrupt:
        log(f"interrupted: {plan.path} is left incomplete; the same command resumes it")
        raise
    result["seconds"] = round(time.perf_counter() - t0, 2)
    if runner.process_rank() > 0:
        return 0  # a DDP worker: rank 0 reports
    if json_out:
        emit_json(result)
    else:
        _summary(result)
    return 0


def _dry_run(plan, json_out: bool) -> int:
    from medrun.artifacts import RunDir
    from medrun.pipelines.runner import build_model
    from medrun.pipelines.training import check_trainer, count_params

    if getattr(plan.manifest, "trainer", None) is not None:  # what the real run would refuse, the dry run refuses too
        check_trainer(plan.manifest.trainer)
    counts = count_params(build_model(plan.spec, plan.manifest))
    existing = RunDir(plan.path)
    out = {
        "run_id": plan.run_id, "run_dir": str(plan.path), "pipeline": plan.spec.slug, "stage": plan.request.stage,
        "status": "dry-run", "would_reuse": existing.is_complete() and not plan.request.force,
        "parent": plan.parent.info().get("id") if plan.parent else None,
        "data": {k: {"root": str(v), "files": len(plan.data_fp[k]["files"]), "sha256": plan.data_fp[k]["sha256"]}
                 for k, v in plan.data_roots.items()},
        "code_sha256": plan.code_fp["sha256"], **counts,
    }
    if json_out:
        emit_json(out)
        return 0
    con = stdout()
    con.print(f"[bold]plan[/] {plan.spec.slug} {plan.request.stage} (dry run: nothing is trained)")
    for k, v in out["data"].items():
        con.print(f"  data {k}: {v['root']} ({v['files']} files, sha256 {v['sha256'][:12]})")
    con.print(f"  model: {counts['params_total']:,} parameters ({counts['params_trainable']:,} trainable)")
    if plan.parent:
        con.print(f"  uses train run: {plan.parent.path}")
    con.print(f"  run id: {plan.run_id}")
    con.print(f"  run dir: {plan.path}" + ("  [green](complete: would be reused)[/]" if out["would_reuse"] else ""))
    return 0


def _summary(result: dict) -> None:
    con = stdout()
    state = "reused (already complete)" if result["reused"] else result["status"]
    con.print(f"[bold green]{state}[/]  {result['run_dir']}")
    shown = {k: v for k, v in result["metrics"].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if shown:
        con.print("  " + "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items()))
