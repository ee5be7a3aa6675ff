from medrun.manifests import MANIFEST_DIR, all_manifests


def test_list_json(cli):
    r = cli("list", "--json")
    assert r.code == 0
    data = r.json()
    ad = next(p for p in data["pipelines"] if p["slug"] == "ad-lite")
    assert ad["datasets"] == ["ad", "adni", "oasis", "merged", "imagefolder"] and "cv" in ad["stages"]
    assert {"ad", "adni", "oasis", "merged"} <= {d["name"] for d in data["datasets"]}
    own = {p["slug"]: p["own_data"] for p in data["pipelines"]}
    assert all(o["dataset"] and o["layout"] for o in own.values())  # issue 21: every pipeline states one
    assert own["ad-lite"]["dataset"] == "imagefolder" and own["unet-lrp"]["dataset"] == "pairs"
    assert own["asd-transformer"]["dataset"] == "abide" and "timeseires" in own["asd-transformer"]["layout"]
    text = cli("list")
    assert "own data: --dataset pairs --data-dir DIR, DIR = <root>/{images,masks}/" in text.out
    assert "[+ vitals.csv" in text.out  # a layout's brackets are printed, not read as markup


def test_model_summary_json(cli):
    assert cli("show", "ad-lite", "--dataset", "oasis", "--model-summary", "--json").json() == \
        {"params_total": 232138, "params_trainable": 232138}
    assert cli("show", "ad-lite", "--dataset", "adni", "--model-summary", "--json").json()["params_total"] == 231945


def test_show_resolves_manifest_and_run_id(cli, runs):
    r = cli("show", "ad-lite", "--dataset", "oasis", "--fixture", "-o", "train.epochs=2", "--runs-dir", runs, "--json")
    assert r.code == 0
    out = r.json()
    assert out["manifest"]["train"]["epochs"] == 2 and len(out["run_id"]) == 64
    again = cli(
        "show", "ad-lite", "--dataset", "oasis", "--fixture", "-o", "train.epochs=2", "--runs-dir", runs, "--json"
    )
    assert again.json()["run_id"] == out["run_id"]


def test_show_schema(cli):
    schema = cli("show", "ad-lite", "--schema").json()
    assert "dataset" in schema["properties"] and schema.get("additionalProperties") is False


def test_validate_all_repository_manifests(cli):
    files = all_manifests()
    assert len(files) >= 8
    r = cli("validate", *files)
    assert r.code == 0, r.out


def test_validate_bad_manifest_exit_2(cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"extends: {MANIFEST_DIR / 'ad-lite' / 'oasis.yaml'}\ntrain:\n  epoch: 3\n")
    r = cli("validate", bad, MANIFEST_DIR / "ad-lite" / "ad.yaml")
    assert r.code == 2
    assert f"{bad}:3" in r.out and "did you mean 'epochs'" in r.out
    assert "ok" in r.out  # the good one is still reported


def test_fixture_command_writes_public_layout(cli, tmp_path):
    r = cli("fixture", "oasis", "--out", tmp_path / "o")
    assert r.code == 0
    assert sorted(p.name for p in (tmp_path / "o" / "Data").iterdir()) == [
        "Mild Dementia", "Moderate Dementia", "Non Demented", "Very mild Dementia"]


def test_doctor(cli):
    r = cli("doctor", "--json")
    assert r.code == 0 and r.json()["torch"]


def test_doctor_recognises_mlflow_skinny(cli, monkeypatch):
    import importlib.metadata as md

    real = md.version

    def version(dist):
        if dist == "mlflow":
            raise md.PackageNotFoundError(dist)
        return "3.1.0" if dist == "mlflow-skinny" else real(dist)

    monkeypatch.setattr(md, "version", version)
    r = cli("doctor", "--json")
    assert r.code == 0 and r.json()["packages"]["mlflow"] == "3.1.0 (mlflow-skinny)"


def test_unknown_command_is_usage_error(cli):
    r = cli("trian", "ad-lite")
    # one suggestion block (click's), naming the close command; typer's own second one is off
    assert r.code == 2 and r.err.count("Did you mean") == 1 and "'train'" in r.err


def test_unknown_pipeline_and_dataset_suggest(cli, runs):
    r = cli("train", "ad-lte", "--dataset", "oasis", "--runs-dir", runs)
    assert r.code == 2 and "did you mean 'ad-lite'" in r.err and "Traceback" not in r.err
    r = cli("train", "ad-lite", "--dataset", "oasys", "--runs-dir", runs)
    assert r.code == 2 and "did you mean 'oasis'" in r.err
    r = cli(
        "cv", "ad-lite", "--manifest", MANIFEST_DIR / "ad-lite" / "oasis.yaml", "--dataset", "adni", "--runs-dir", runs
    )
    assert r.code == 2 and "not 'adni'" in r.err
    assert not runs.exists()


def test_version(cli):
    from medrun import __version__

    for flag in ("--version", "-V"):
        r = cli(flag)
        assert r.code == 0 and r.out.strip() == f"medrun {__version__}"
