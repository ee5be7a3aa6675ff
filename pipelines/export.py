"""``medrun export RUN --format monai-bundle --out DIR``: a finished train run as a MONAI bundle.

The bundle follows MONAI's bundle specification::

    DIR/configs/metadata.json     the specification's fields, the versions captured in the run's env.json, and a
                                  "medrun" block naming the run, its manifest, data, code and weights hashes
    DIR/configs/inference.yaml    network_def, preprocessing, `initialize` / `run` expressions for MONAI's runner
    DIR/models/model.pt           the run's weights as a plain state dict (loads with weights_only=True)
    DIR/docs/README.md            what the bundle does and how to run it

MONAI's own runner executes it offline (``python -m monai.bundle run --config_file DIR/configs/inference.yaml
--meta_file DIR/configs/metadata.json --bundle_root DIR --input_dir IMAGES --output_dir OUT``); the network class is
imported from medrun, so medrun must be installed where the bundle runs. A pipeline supports export by giving its
``Pipeline`` a ``bundle_parts()`` method (see ad-lite); the bundle is written to a temporary folder beside DIR and
renamed into place, so a failed export leaves nothing that looks complete. Every bundle holds a marker file,
``.medrun-bundle.json``; ``--force`` replaces only a folder holding one (``artifacts.replace``), never the current
folder, home, the runs folder or the source run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from medrun.artifacts import RunDir, sha256_file
from medrun.artifacts.replace import BUNDLE_MARKER, check_target, replace_dir
from medrun.errors import UsageError

from . import get as get_pipeline
from .base import StageContext

FORMATS = ("monai-bundle",)
SCHEMA = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json"


def export(run: RunDir, out: Path, fmt: str = "monai-bundle", force: bool = False) -> dict:
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format '{fmt}'", fix=f"use --format {' | '.join(FORMATS)}")
    info = run.info()
    if not run.is_complete():
        raise UsageError(f"run {run.path} is not complete (status: {info.get('status', 'unknown')})",
                         fix="finish it by running its command again, or export a complete train run")
    weights = run.path / "checkpoints" / "model.safetensors"
    recorded = run.recorded_hashes().get("checkpoints/model.safetensors")
    if recorded is None:
        raise UsageError(f"run {run.path} is a {info.get('stage')} run with no checkpoints/model.safetensors",
                         fix="export a train run")
    if sha256_file(weights) != recorded:
        from medrun.errors import VerifyError

        raise VerifyError(f"{weights} does not match its run's MANIFEST.sha256", fix="`medrun verify` the run")
    guard = dict(marker=BUNDLE_MARKER, force=force, runs=_runs_folders(run), sources=(run.path,))
    check_target(out, **guard)  # before any work; replace_dir checks again right before it writes
    spec = get_pipeline(info["pipeline"])
    manifest = spec.manifest_cls().model_validate(yaml.safe_load((run.path / "manifest.yaml").read_text()))
    ctx = StageContext(stage="export", manifest=manifest, run=run, data_roots={}, spec=spec)
    pipeline = spec.load()(manifest, ctx)
    if not hasattr(pipeline, "bundle_parts"):
        raise UsageError(f"pipeline {spec.slug} does not support monai-bundle export yet",
                         fix="export a run of a pipeline that does (see `medrun export --help`)")
    parts = pipeline.bundle_parts()
    env = json.loads((run.path / "env.json").read_text())

    def build(tmp: Path) -> None:
        for sub in ("configs", "models", "docs"):
            (tmp / sub).mkdir()
        import torch
        from safetensors.torch import load_file

        torch.save(load_file(str(weights)), tmp / "models" / "model.pt")
        meta = _metadata(spec, info, env, parts, sha256_file(tmp / "models" / "model.pt"), recorded)
        (tmp / "configs" / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
        (tmp / "configs" / "inference.yaml").write_text(yaml.safe_dump(_inference(parts), sort_keys=False))
        (tmp / "docs" / "README.md").write_text(_readme(spec, info, parts))

    out, _ = replace_dir(out, build, marker_data=lambda tmp, _: {"format": fmt, "run_id": info["id"],
                                                                 "pipeline": spec.slug}, **guard)
    return {
        "bundle": str(out),
        "format": fmt,
        "run": info["id"],
        "pipeline": spec.slug,
        "files": sorted(
            p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != BUNDLE_MARKER
        ),
    }


def _runs_folders(run: RunDir) -> list[Path]:
    """The runs folders an export must not replace: the one holding the source run (``<runs>/<pipeline>/<run>``)
    and the one MEDRUN_RUNS names."""
    return [run.path.parent.parent, *([Path(os.environ["MEDRUN_RUNS"])] if os.environ.get("MEDRUN_RUNS") else [])]


def _metadata(spec, info: dict, env: dict, parts: dict, model_sha: str, weights_sha: str) -> dict:
    pk = env.get("packages", {}) or {}
    return {
        "schema": SCHEMA,
        "version": "0.1.0",
        "changelog": {"0.1.0": f"exported by medrun from {spec.slug} run {info['id'][:12]}"},
        "monai_version": pk.get("monai", ""),
        "pytorch_version": (env.get("torch") or pk.get("torch", "")).split("+")[0],
        "numpy_version": pk.get("numpy", ""),
        "required_packages_version": {k: pk[k] for k in ("medrun", "pillow", "safetensors") if k in pk},
        "name": f"{spec.slug} ({info.get('dataset')})",
        "task": parts["task"],
        "description": f"{spec.title}: {spec.paper}. Trained by medrun ({info.get('dataset')}"
                       + (", generated fixture" if info.get("fixture") else "") + ").",
        "authors": "medrun export",
        "copyright": "see the paper and the dataset's licence",
        "data_source": info.get("dataset", ""),
        "data_type": parts.get("data_type", "image"),
        "intended_use": "research reproduction; not for clinical use",
        "references": [spec.paper],
        "network_data_format": {"inputs": {"image": parts["input"]}, "outputs": {"pred": parts["output"]}},
        "medrun": {"run_id": info["id"], "pipeline": spec.slug, "stage": info.get("stage"),
                   "manifest_sha256": info.get("manifest_sha256"), "data_sha256": info.get("data_sha256"),
                   "code_sha256": (info.get("code") or {}).get("sha256"), "weights_sha256": weights_sha,
                   "model_pt_sha256": model_sha, "env": {k: env.get(k) for k in ("python", "torch", "cuda")}},
    }


def _inference(parts: dict) -> dict:
    return {
        "imports": ["$import glob", "$import json", "$import os", "$import PIL", "$import torch", "$import monai"],
        "bundle_root": ".",
        "input_dir": "$@bundle_root + '/input'",
        "output_dir": "$@bundle_root + '/eval'",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "classes": parts.get("classes", []),
        "network_def": parts["network_def"],
        "network": "$@network_def.to(@device)",
        "checkpoint": "$@bundle_root + '/models/model.pt'",
        "datalist": "$sorted(f for f in glob.glob(os.path.join(@input_dir, '**', '*'), recursive=True) "
                    f"if f.lower().endswith({tuple(parts['suffixes'])!r}))",
        "preprocessing": {"_target_": "Compose", "transforms": parts["preprocessing"]},
        "predict": parts["predict"],
        "initialize": [
            "$@network.load_state_dict(torch.load(@checkpoint, map_location=@device, weights_only=True))",
            "$@network.eval()",
        ],
        "run": [
            "$os.makedirs(@output_dir, exist_ok=True)",
            "$json.dump({os.path.relpath(f, @input_dir): @predict(f) for f in @datalist}, "
            "open(os.path.join(@output_dir, 'predictions.json'), 'w'), indent=1)",
        ],
    }


def _readme(spec, info: dict, parts: dict) -> str:
    fixture = ", generated fixture" if info.get("fixture") else ""
    return f"""# {spec.title} — MONAI bundle exported by medrun

From run `{info["id"]}` ({spec.slug} {info.get("stage")}, dataset {info.get("dataset")}{fixture}).
Paper: {spec.paper}

{parts.get("readme", "")}

## Run it with MONAI's bundle runner (offline; medrun must be installed: the network class comes from it)

```bash
python -m monai.bundle run --config_file configs/inference.yaml --meta_file configs/metadata.json \\
    --bundle_root . --input_dir /path/to/images --output_dir /path/to/out
```

It writes `predictions.json` in the output folder. `configs/metadata.json` holds the versions the run was trained
with and, under `medrun`, the run id and the hashes of its manifest, data, code and weights.

## Evaluate the exported weights with medrun

```bash
medrun eval {spec.slug} --dataset {info.get("dataset")} --checkpoint models/model.pt
```
"""
