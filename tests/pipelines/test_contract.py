"""The pipeline contract, checked for every registered pipeline (issue 15, item 6): a new paper cannot land
without its manifests, fixtures, learning check, stage help, README row, paper notes and an export decision; and
no paper package writes into its run directory except through the run's writers, or imports the runner."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from medrun import manifests
from medrun.pipelines import CORE_STAGES, registry

REPO = Path(__file__).resolve().parents[2]
SPECS = sorted(registry().values(), key=lambda s: s.slug)
IDS = [s.slug for s in SPECS]


def _package(spec) -> Path:
    return REPO / "pipelines" / spec.slug.replace("-", "_")


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_manifests_validate_and_every_dataset_has_a_fixture(spec):
    from medrun.pipelines import dataset_info

    fixtures = 0
    for ds in spec.datasets:
        real = manifests.manifest_path(spec.slug, ds)
        assert real.exists(), f"{spec.slug}: no manifest for dataset {ds} ({real})"
        m = manifests.validate(manifests.load_file(real), spec.manifest_cls())
        assert m.paper is not None and m.paper.card == spec.card, f"{real}: a paper section naming card {spec.card}"
        fix = manifests.manifest_path(spec.slug, ds, fixture=True)
        if fix.name.endswith(".fixture.yaml"):
            fixtures += 1
            manifests.validate(manifests.load_file(fix), spec.manifest_cls())
        assert dataset_info(ds).fixture, f"dataset {ds} has no fixture generator"
    assert fixtures, f"{spec.slug} has no <dataset>.fixture.yaml (the card's smoke run)"


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_has_a_learning_check(spec):
    tests = REPO / "tests" / "pipelines" / f"test_{spec.slug.replace('-', '_')}.py"
    assert tests.exists(), f"{spec.slug}: no {tests.relative_to(REPO)}"
    assert re.search(r"def test_\w*(learns|smoke)\w*\(", tests.read_text()), \
        f"{tests.name}: no learning check (a test named test_learns… or …smoke…)"


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_every_extra_stage_has_help_and_parents_are_stages(spec):
    missing = [s for s in spec.stages if s not in CORE_STAGES and s not in spec.stage_help]
    assert not missing, f"{spec.slug}: stage_help lacks {missing}"
    assert set(spec.parents) <= set(spec.stages) and set(spec.parents.values()) <= set(spec.stages)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_readme_lists_it_and_its_paper_notes_exist(spec):
    readme = (REPO / "README.md").read_text()
    assert f"| `{spec.slug}` |" in readme, f"README.md has no row for {spec.slug}"
    notes = REPO / "docs" / "papers" / f"{spec.slug}.md"
    assert notes.exists(), f"no {notes.relative_to(REPO)}"


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_exports_a_bundle_or_says_why_not(spec):
    impl = spec.load()
    assert hasattr(impl, "bundle_parts") or spec.no_export, \
        f"{spec.slug}: define bundle_parts() or PipelineSpec(no_export='why')"


# -- writes and imports ----------------------------------------------------------------------------------------
# Writing into a run directory goes through ctx.write_* / ctx.figure / ctx.save_figure (atomic, in the run).
FORBIDDEN = re.compile(r"savefig\(|atomic_write\(|\.write_bytes\(|np\.save\(|np\.savez|torch\.save\(|"
                       r"open\([^)]*['\"][wa]b?['\"]|\.to_csv\(|nib\.save\(|\bwrite_csv\(|write_per_case\(|"
                       r"overlay_png\(|confusion_png\(|learning_curves\(|save_figure\(|\bImage\.fromarray\([^)]*\)\.save\(")
ALLOWED = re.compile(r"ctx\.(write_\w+|save_figure|figure|learning_curves)\(")
# files that write outside any run directory, with the reason
OUTSIDE_RUNS: dict[str, str] = {}  # (caches write through artifacts.cache)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_writes_only_through_the_run_and_never_imports_the_runner(spec):
    bad = []
    for path in sorted(_package(spec).glob("*.py")):
        rel = path.relative_to(REPO / "pipelines").as_posix()
        for no, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if re.search(r"from \.\.runner import|from \.\. import runner|medrun\.pipelines\.runner", code):
                bad.append(f"{rel}:{no}: imports the runner")
            if rel not in OUTSIDE_RUNS and FORBIDDEN.search(ALLOWED.sub("", code)):
                bad.append(f"{rel}:{no}: {line.strip()}")
    assert not bad, "\n".join(bad)
