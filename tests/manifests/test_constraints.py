"""Every pipeline's manifest keeps the envelope's bounds (issue 14, item 2).

Pipelines re-declare ``epochs``, ``batch_size`` and ``lr`` with their own defaults; with a plain ``int`` that used
to drop the envelope's ``Field(ge=1)``, so ``-o train.epochs=0`` sealed an untrained model as complete. The bounds
now live in annotated types (``manifests.schema.Epochs`` …) and these tests hold every pipeline to them.
"""

from __future__ import annotations

from typing import get_args

import pytest
from pydantic import BaseModel

from medrun import manifests, pipelines
from medrun.errors import UsageError

SLUGS = sorted(pipelines.registry())
# pipelines whose train stage has no epochs, with the reason (every other one must bound train.epochs)
NO_EPOCHS = {"sepsis-synth": "train fits scikit-learn forests and SVMs; TabDDPM's steps are generate.tabddpm.steps"}
BAD = ["train.epochs=0", "train.epochs=-1", "train.batch_size=0", "train.lr=0", "train.lr=-0.1", "seed=-1",
       "seed=4294967296"]


def _fixture_manifest(slug: str) -> manifests.Resolved:
    path = sorted((manifests.MANIFEST_DIR / slug).glob("*.fixture.yaml"))[0]
    return manifests.load_file(path)


def _refused(slug: str, overrides) -> UsageError:
    schema = pipelines.get(slug).manifest_cls()
    resolved = _fixture_manifest(slug)
    manifests.validate(resolved, schema)  # the fixture manifest itself is valid
    with pytest.raises(UsageError) as e:
        manifests.validate(manifests.apply_overrides(resolved, overrides), schema)
    assert e.value.exit_code == 2
    return e.value


@pytest.mark.parametrize("override", BAD)
@pytest.mark.parametrize("slug", SLUGS)
def test_every_pipeline_refuses_out_of_range_training_values(slug, override):
    err = _refused(slug, [override])
    assert f"'{override.split('=')[0]}'" in str(err)


def test_seed_bounds_are_inclusive_where_they_should_be():
    schema = pipelines.get("ad-lite").manifest_cls()
    resolved = _fixture_manifest("ad-lite")
    for ok in ("seed=0", "seed=4294967295"):
        manifests.validate(manifests.apply_overrides(resolved, [ok]), schema)


def _models(annotation):
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in get_args(annotation):
        yield from _models(arg)


def _bounded_fields(model, prefix=""):
    """(dotted path, field name) of every epochs/batch_size/lr/seed(s) field in any section of the manifest."""
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        for sub in _models(info.annotation):
            yield from _bounded_fields(sub, path + ".")
        if name in ("epochs", "batch_size", "lr") or name.endswith(("seed", "seeds")):
            yield path, name


def _bad_values(name: str):
    if name == "epochs":
        return [-1]  # 0 is allowed only where it means "off" (lorasam's pretrain.epochs); checked above for train
    if name in ("batch_size", "lr"):
        return [0]
    if name.endswith("seeds"):
        return [[-1], [2**32]]
    return [-1, 2**32]


@pytest.mark.parametrize("slug", SLUGS)
def test_every_section_bounds_counts_rates_and_seeds(slug):
    fields = sorted(set(_bounded_fields(pipelines.get(slug).manifest_cls())))
    assert any(p == "train.epochs" for p, _ in fields) or slug in NO_EPOCHS
    for path, name in fields:
        for value in _bad_values(name):
            err = _refused(slug, {path: value})
            assert f"'{path}" in str(err), (path, value, str(err))
