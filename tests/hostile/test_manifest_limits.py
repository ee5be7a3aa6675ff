"""Hostile manifests (issue 14, item 3): loading is bounded in memory and time, and every refusal is one line with
exit 2 naming the file (and line where there is one)."""

from __future__ import annotations

import os
import resource
import time

import pytest

BOMB = "pipeline: ad-lite\n" + 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{n}: &{n} [{','.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True))


@pytest.fixture
def env(tmp_path):
    return {"MEDRUN_CACHE": str(tmp_path / "cache"), "MEDRUN_RUNS": str(tmp_path / "runs")}


def _train(medrun_proc, env, manifest, *extra, **kw):
    return medrun_proc("train", "ad-lite", "--manifest", manifest, "--dry-run", *extra, env=env, timeout=30, **kw)


def _limit_memory():
    cap = 512 << 20  # the bomb reached 2.1 GB before the fix; a refusal needs well under 100 MB
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def test_alias_bomb_fails_fast_in_bounded_memory(medrun_proc, env, tmp_path, one_line_error):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    assert len(BOMB) < 2000
    t0 = time.monotonic()
    proc = _train(medrun_proc, env, bomb, preexec=_limit_memory)
    assert time.monotonic() - t0 < 60  # a hang guard, not a speed target (the bomb ran for minutes unfixed)
    one_line_error(proc, 2, f"{bomb}:3", "aliases")


def test_alias_bomb_in_an_override_is_refused(medrun_proc, env, tmp_path, one_line_error):
    ok = tmp_path / "ok.yaml"
    ok.write_text("extends: " + str(_fixture("ad-lite", "oasis")) + "\n")
    proc = _train(medrun_proc, env, ok, "-o", "model.x=[&a [1, 2, 3], [*a, *a], [*a, *a]]", preexec=_limit_memory)
    one_line_error(proc, 2, "override model.x", "aliases")


def _fixture(slug, dataset):
    from medrun.manifests import manifest_path

    return manifest_path(slug, dataset, fixture=True)


def test_half_a_million_keys_refused_by_the_size_cap(medrun_proc, env, tmp_path, one_line_error):
    big = tmp_path / "keys.yaml"
    big.write_text("pipeline: ad-lite\n" + "".join(f"k{i}: {i}\n" for i in range(500_000)))
    t0 = time.monotonic()
    proc = _train(medrun_proc, env, big)
    assert time.monotonic() - t0 < 60  # a hang guard, not a speed target (the bomb ran for minutes unfixed)
    one_line_error(proc, 2, str(big), "MiB limit")


@pytest.mark.parametrize("target", ["/dev/zero", "fifo", "folder"])
def test_extends_a_non_regular_file_is_refused_before_opening(medrun_proc, env, tmp_path, one_line_error, target):
    if target == "fifo":
        target = tmp_path / "fifo"
        os.mkfifo(target)  # nobody writes: open() would block forever
    elif target == "folder":
        target = tmp_path / "folder"
        target.mkdir()
    child = tmp_path / "child.yaml"
    child.write_text(f"extends: {target}\npipeline: ad-lite\n")
    one_line_error(_train(medrun_proc, env, child), 2, str(target))
    one_line_error(_train(medrun_proc, env, target), 2, str(target))  # named directly, too


def test_non_utf8_bytes_name_file_and_line(medrun_proc, env, tmp_path, one_line_error):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"pipeline: ad-lite\nseed: 1\ndataset: {name: oasis, root: /d/caf\xe9}\n")
    one_line_error(_train(medrun_proc, env, bad), 2, f"{bad}:3", "UTF-8")


def test_hundred_thousand_nested_brackets(medrun_proc, env, tmp_path, one_line_error):
    deep = tmp_path / "deep.yaml"
    deep.write_text("pipeline: ad-lite\nx: " + "[" * 100_000 + "]" * 100_000 + "\n")
    one_line_error(_train(medrun_proc, env, deep), 2, f"{deep}:2")


def test_list_where_the_pipeline_name_belongs(medrun_proc, env, tmp_path, one_line_error):
    bad = tmp_path / "list.yaml"
    bad.write_text("pipeline: [ad-lite]\ndataset: {name: oasis, root: /d}\n")
    line = one_line_error(_train(medrun_proc, env, bad), 2, f"{bad}:1", "'pipeline' must be a name", "ad-lite")
    assert "[" not in line.split("error:", 1)[1]
    proc = medrun_proc("validate", bad, env=env)  # `medrun validate` used to crash on it (exit 1)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and f"{bad}:1" in proc.stdout
