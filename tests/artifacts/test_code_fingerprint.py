"""Per-pipeline code fingerprints (issue 25): an edit changes the run ids of exactly the pipelines that import it.

Every edit is made on a copy of the installed source folders in tmp; the real sources are never touched.
"""

from __future__ import annotations

import json
import shutil

import pytest

from medrun.artifacts import fingerprint as fp
from medrun.artifacts import imports
from medrun.pipelines import get
from medrun.pipelines.runner import code_roots


@pytest.fixture(scope="module")
def roots():
    return {slug: code_roots(get(slug)) for slug in ("ad-lite", "sc-unext")}


@pytest.fixture
def tree(tmp_path):
    """A copy of the installed package folders; returns (dirs, edit) where edit appends to a file of the copy."""
    dirs = []
    for d in fp._source_dirs():
        dirs.append(tmp_path / "src" / d.name)
        shutil.copytree(d, dirs[-1], ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))

    def edit(rel: str, text: str = "\n# an edit\n"):
        path = tmp_path / "src" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text((path.read_text() if path.exists() else "") + text)

    return dirs, edit


def shas(roots, dirs):
    return {slug: fp.code_fingerprint(r, dirs=dirs)["sha256"] for slug, r in roots.items()}


def test_copy_fingerprints_like_the_installed_sources(roots, tree):
    dirs, _ = tree
    assert shas(roots, dirs) == {slug: fp.code_fingerprint(r)["sha256"] for slug, r in roots.items()}


def test_pipeline_edit_changes_only_that_pipeline(roots, tree):
    dirs, edit = tree
    before = shas(roots, dirs)
    edit("pipelines/ad_lite/pipeline.py")
    after = shas(roots, dirs)
    assert after["ad-lite"] != before["ad-lite"] and after["sc-unext"] == before["sc-unext"]


def test_model_edit_changes_its_importers_only(roots, tree):
    dirs, edit = tree
    before = shas(roots, dirs)
    edit("models/unext.py")
    after = shas(roots, dirs)
    assert after["sc-unext"] != before["sc-unext"] and after["ad-lite"] == before["ad-lite"]


@pytest.mark.parametrize("rel", ["pipelines/runner.py", "artifacts/hashing.py", "medrun/errors.py",
                                 "medrun/__init__.py", "pipelines/__init__.py"])
def test_runner_and_artifacts_edits_change_every_pipeline(roots, tree, rel):
    dirs, edit = tree
    before = shas(roots, dirs)
    edit(rel)
    after = shas(roots, dirs)
    assert all(after[s] != before[s] for s in roots)


def test_docs_and_unimported_files_change_nothing(roots, tree):
    dirs, edit = tree
    before = shas(roots, dirs)
    edit("pipelines/ad_lite/paper.yaml", "\n# a note\n")
    edit("pipelines/sm_safe/pipeline.py")  # another paper
    edit("cli/info.py")  # the CLI passes on only what the run id hashes anyway
    edit("models/cmunet.py")
    assert shas(roots, dirs) == before


def test_lazy_and_relative_imports_inside_functions_are_covered(roots, tree):
    """The pipelines import heavy modules inside functions; sc-unext's UNeXt import is one of them."""
    dirs, edit = tree
    assert "models/unext.py" in fp.code_fingerprint(roots["sc-unext"], dirs=dirs)["files"]
    edit("models/lazy_probe.py", "X = 1\n")
    edit("models/rel_probe.py", "Y = 1\n")
    edit("pipelines/ad_lite/pipeline.py", "\n\ndef _probe():\n    from medrun.models import lazy_probe\n"
                                          "    from ...models.rel_probe import Y\n    return lazy_probe, Y\n")
    files = fp.code_fingerprint(roots["ad-lite"], dirs=dirs)["files"]
    assert {"models/lazy_probe.py", "models/rel_probe.py"} <= set(files)
    one = fp.code_fingerprint(roots["ad-lite"], dirs=dirs)["sha256"]
    edit("models/lazy_probe.py", "X = 2\n")
    assert fp.code_fingerprint(roots["ad-lite"], dirs=dirs)["sha256"] != one


def test_models_create_literal_covers_that_model_and_a_variable_covers_all(roots, tree):
    dirs, edit = tree
    edit("pipelines/ad_lite/pipeline.py", "\n\ndef _net():\n    from medrun import models\n"
                                          "    return models.create('unext')\n")
    files = set(fp.code_fingerprint(roots["ad-lite"], dirs=dirs)["files"])
    assert "models/unext.py" in files and "models/cmunet.py" not in files
    edit("pipelines/ad_lite/pipeline.py", "\n\ndef _any(name):\n    from medrun.models import create\n"
                                          "    return create(name)\n")
    assert "models/cmunet.py" in fp.code_fingerprint(roots["ad-lite"], dirs=dirs)["files"]


def test_unresolved_dynamic_import_covers_the_whole_folder(roots, tree):
    dirs, edit = tree
    edit("pipelines/ad_lite/pipeline.py", "\n\ndef _load(name):\n    import importlib\n"
                                          "    return importlib.import_module(name)\n")
    files = fp.code_fingerprint(roots["ad-lite"], dirs=dirs)["files"]
    assert "pipelines/sm_safe/pipeline.py" in files and "pipelines/sc_unext/config.py" in files


def test_every_dynamic_import_in_the_sources_is_accounted_for():
    """A new dynamic import falls back to "the whole folder"; this keeps the fall-back from hiding silently (resolve
    it in ``imports.DYNAMIC`` if the code says what it loads, or accept the wider fingerprint here)."""
    from medrun.pipelines import registry

    idx = imports.index(fp._source_dirs())
    covered = {n: p for spec in registry().values() for n, p in imports.covered(code_roots(spec), idx).items()}
    assert not sorted(n for n, p in covered.items() if p.dynamic and n not in imports.DYNAMIC)


def test_record_has_roots_files_and_version(roots):
    code = fp.code_fingerprint(roots["ad-lite"])
    assert code["roots"] == roots["ad-lite"] and code["version"]
    assert {"pipelines/ad_lite/pipeline.py", "pipelines/runner.py", "datasets/alzheimer.py", "medrun/__init__.py",
            "medrun/errors.py", "models/adlite.py", "models/__init__.py"} <= set(code["files"])
    assert all(len(v) == 64 for v in code["files"].values())
    assert not any(f.startswith(("pipelines/sc_unext/", "cli/")) for f in code["files"])


def test_parse_cache_survives_the_process_and_ignores_damage(roots, tree, tmp_path, monkeypatch):
    dirs, _ = tree
    monkeypatch.setenv("MEDRUN_CACHE", str(tmp_path / "cache"))
    want = fp.code_fingerprint(roots["sc-unext"], dirs=dirs)
    saved = tmp_path / "cache" / "code-imports.json"
    assert json.loads(saved.read_text())["entries"]
    imports._PARSED.clear(), imports._LOADED.clear()
    assert fp.code_fingerprint(roots["sc-unext"], dirs=dirs)["files"] == want["files"]
    saved.write_text("{not json")
    imports._PARSED.clear(), imports._LOADED.clear()
    assert fp.code_fingerprint(roots["sc-unext"], dirs=dirs)["files"] == want["files"]
    saved.write_text(json.dumps({"scanner": "other code", "entries": {"x:y": [[], False, []]}}))
    imports._PARSED.clear(), imports._LOADED.clear()
    assert fp.code_fingerprint(roots["sc-unext"], dirs=dirs)["sha256"] == want["sha256"]


def test_verify_names_the_covered_file_that_changed(cli, runs, data, make_run, roots, tree, monkeypatch):
    dirs, edit = tree
    monkeypatch.setattr(fp, "_source_dirs", lambda: dirs)
    run = make_run(runs, data)
    info = json.loads((run / "run.json").read_text())
    info["code"] = fp.code_fingerprint(roots["ad-lite"])
    (run / "run.json").write_text(json.dumps(info))
    from medrun.artifacts import RunDir
    from medrun.artifacts.verify import check_code

    RunDir(run).seal()
    assert check_code(RunDir(run))["status"] == "ok"
    edit("models/unext.py")  # not ad-lite's
    assert check_code(RunDir(run))["status"] == "ok"
    edit("models/adlite.py")
    code = check_code(RunDir(run))
    assert code["status"] == "drift" and code["files"]["changed"] == ["models/adlite.py"]
    plain = cli("verify", run)
    assert plain.code == 0 and "changed  models/adlite.py" in plain.out
    strict = cli("verify", run, "--strict")
    assert strict.code == 5 and "models/adlite.py" in strict.err


def test_show_json_gives_code_fingerprint_and_files(cli, runs, roots):
    r = cli("show", "sc-unext", "--dataset", "isic2018", "--runs-dir", runs, "--json")
    assert r.code == 0, r.err
    code = r.json()["code"]
    assert code["sha256"] == fp.code_fingerprint(roots["sc-unext"])["sha256"]
    assert "models/unext.py" in code["files"] and "models/adlite.py" not in code["files"]


def test_run_id_survives_another_pipelines_edit(roots, tree, runs, monkeypatch):
    """What makes smoke incremental: ad-lite's planned run id (so its reuse) ignores an edit to sc-unext."""
    from medrun.pipelines.runner import Request, plan

    dirs, edit = tree
    monkeypatch.setattr(fp, "_source_dirs", lambda: dirs)

    def run_id():
        req = Request(pipeline="ad-lite", stage="train", dataset="oasis", fixture=True, runs_dir=runs)
        return plan(req, log=lambda *a: None).run_id

    one = run_id()
    edit("pipelines/sc_unext/pipeline.py")
    edit("models/unext.py")
    assert run_id() == one
    edit("pipelines/ad_lite/config.py")
    assert run_id() != one
