"""Stage commands: ``medrun train|eval|predict|cv|… PIPELINE --dataset NAME [options]``."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer

from .output import emit_json, log, stdout

CORE = {
    "train": "Train a pipeline's model; writes weights, learning curves, test metrics and paper.md.",
    "eval": "Evaluate a finished train run (the newest of the same manifest, --run ID, or --checkpoint FILE).",
    "predict": "Predict with a finished train run; writes per-case predictions.",
}
EXTRA_HELP = {
    "cv": "Cross-validate (k folds, as the pipeline's card says); writes per-fold metrics and mean ± sd.",
    "explain": "Explain a finished train run (--run ID or --checkpoint FILE): maps as .npy, overlays, per-image CSV.",
    "attack": "Attack a finished train run's model (--run ID or --checkpoint FILE): adversarial images and success rates.",
    "ablate": "Run the paper's ablation table: every variant the manifest lists (dotted overrides), one summary table.",
    "repeat": "Train once per split seed the card's protocol names; writes each repeat and mean ± variance.",
    "complexity": "Count parameters and multiply-accumulates of the card's models beside the paper's table.",
    "fuse-maps": "Write a finished train run's per-modality fusion weight maps (NIfTI) and their means per label.",
    "summarize": "Summarise a finished multi-task train run: mean ± sd across its tasks.",
    "lrp-stats": "Relevance statistics of a finished train run (max |R|, conservation, relevance inside the object).",
    "morphology": "Count and measure the objects in a finished train run's predicted masks against the ground truth.",
    "topo": "Compute each subject's persistence diagrams and Wasserstein features once (cached; resumes where it stopped).",
    "analyze": "Group statistics and figures of a finished topo run's features (persistence diagrams, distances).",
    "baseline": "Train the paper's baseline models on the same split; one table beside the paper's.",
    "render": "Render raw signal segments into the images the pipeline reads (epilepsy-mtl: HFO wavelet maps, IED traces).",
    "grid": "Train every combination of the settings the manifest's grid lists; one summary table.",
    "prepare": "Read and check the raw records (tables, volumes) and write the prepared dataset the other stages use.",
    "impute": "Fill a finished train run's missing visits: reconstructed volumes as NIfTI, imputed biomarkers as CSV.",
    "transfer": "Attack every target model with every source model's adversarial images: the source x target table.",
    "sweep-lambda": "Attack once per value of the adversarial weight the manifest lists; one table and a plot.",
}

EXAMPLES = {
    "train": "medrun train ad-lite --dataset oasis --fixture\n\n"
             "  medrun train ad-lite --dataset oasis --data-dir ~/kaggle/imagesoasis/Data -o train.epochs=3\n\n"
             "  medrun train ad-lite --dataset ad --accelerator gpu --devices 2 --strategy ddp --precision bf16-mixed",
    "eval": "medrun eval ad-lite --dataset oasis --fixture --split test\n\n"
            "  medrun eval ad-lite --dataset oasis --run 3fa9c2\n\n"
            "  medrun eval ad-lite --dataset oasis --checkpoint weights.safetensors",
    "predict": "medrun predict ad-lite --dataset oasis --fixture -o predict.input=path/to/images",
    "cv": "medrun cv ad-lite --dataset merged --fixture",
}


def register(app: typer.Typer) -> None:
    from medrun.pipelines import registry

    extra = sorted({s for spec in registry().values() for s in spec.stages} - set(CORE))
    for verb in [*CORE, *extra]:
        help_text = CORE.get(verb) or EXTRA_HELP.get(verb, f"Run the '{verb}' stage of a pipeline.")
        example = EXAMPLES.get(verb, f"medrun {verb} PIPELINE --dataset NAME --fixture")
        app.command(name=verb, help=f"{help_text}\n\nExamples:\n\n  {example}", no_args_is_help=True)(_command(verb))


def _command(verb: str):
    def command(
        pipeline: Annotated[str, typer.Argument(help="pipeline slug (see `medrun list`)")],
        dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="dataset name; picks manifests/<pipeline>/<dataset>.yaml")] = None,
        manifest: Annotated[Path | None, typer.Option("--manifest", "-m", help="a manifest file instead of the repository's")] = None,
        override: Annotated[list[str] | None, typer.Option("--override", "-o", help="key=value, typed as YAML; repeatable")] = None,
        data_dir: Annotated[Path | None, typer.Option(help="the dataset's folder in its public layout (sets dataset.root)")] = None,
        fixture: Annotated[bool, typer.Option("--fixture", help="generate the dataset's miniature into a cache and run on it")] = False,
        runs_dir: Annotated[Path, typer.Option(envvar="MEDRUN_RUNS", help="where run directories go")] = Path("runs"),
        seed: Annotated[int | None, typer.Option(help="overrides the manifest's seed")] = None,
        seeds: Annotated[str | None, typer.Option(help="replicates: one run per seed (e.g. 0,1,2) plus a summary run")] = None,
        force: Annotated[bool, typer.Option("--force", help="run again even if a complete run with this id exists")] = False,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="resolve, validate, fingerprint, build the model; run nothing")] = False,
        run: Annotated[str | None, typer.Option("--run", help="stages on a finished run (eval, predict, explain …): that run's id, id prefix or directory")] = None,
        checkpoint: Annotated[Path | None, typer.Option(help="stages on a finished run: a weights file instead of the run")] = None,
        split: Annotated[str | None, typer.Option(help="the split to evaluate (sets eval.split)")] = None,
        accelerator: Annotated[str | None, typer.Option(help="trainer.accelerator: cpu, gpu, auto …")] = None,
        devices: Annotated[str | None, typer.Option(help="trainer.devices: a count, a list like 0,1, or auto")] = None,
        strategy: Annotated[str | None, typer.Option(help="trainer.strategy: auto, ddp, fsdp …")] = None,
        precision: Annotated[str | None, typer.Option(help="trainer.precision: 32-true, bf16-mixed, 16-mixed …")] = None,
        num_nodes: Annotated[int | None, typer.Option(help="trainer.num_nodes")] = None,
        json_out: Annotated[bool, typer.Option("--json", help="print one JSON object at the end")] = False,
        log_to: Annotated[list[str] | None, typer.Option("--log", help="also log to an experiment tracker: mlflow (local store <runs>/.mlruns unless MLFLOW_TRACKING_URI)")] = None,
    ) -> int:
        from medrun.pipelines.runner import Request

        req = Request(
            pipeline=pipeline, stage=verb, dataset=dataset, manifest=manifest, overrides=override or [],
            data_dir=data_dir, fixture=fixture, runs_dir=runs_dir, seed=seed, force=force, dry_run=dry_run,
            trainer={"accelerator": accelerator, "devices": _devices(devices), "strategy": strategy,
                     "precision": precision, "num_nodes": num_nodes},
            run_ref=run, checkpoint=checkpoint, split=split, argv=os.environ.get("MEDRUN_ARGV", "").split(),
            log_to=tuple(log_to or ()),
        )
        return run_request(req, json_out, seeds)

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


def run_request(req, json_out: bool, seeds: str | None = None) -> int:
    from medrun.pipelines import replicates, runner

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
