"""Launchers for sweep children (``--launcher local[:N] | slurm | submitit-local``).

``pipelines/sweep.run_children`` plans every child in the parent, as always. With a launcher other than plain
``local`` it hands the children that are not complete to :func:`launch_children`, which runs each one in a process
of its own — ``python -m medrun.pipelines.launch REQUEST.json`` (``local:N``, N at once) or a submitit job
(``slurm``; ``submitit-local`` is submitit's local executor, the same code without a cluster). The worker re-plans
the child from its serialised :class:`~medrun.pipelines.runner.Request`, checks that it reaches the same run id,
and calls ``runner.execute``; the parent then executes every child in order, so complete ones are reused at once
and the summary is written exactly as in a sequential sweep. The launcher is hardware, like ``--devices``: it is
not in the manifest's identity and never changes a run id.

A child's stdout and stderr go to ``<runs>/<pipeline>/.launch/<stage>-<id12>.log`` (a dot folder: no run index or
``find_runs`` sees it), never into the parent's output; the runner copies it to the run's ``logs/launcher.log``
just before it seals the run, and the parent copies it there when the child fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from medrun.errors import INTERRUPTED, DataError, EnvError, MedrunError, UsageError, VerifyError

KINDS = ("local", "local:N", "slurm", "submitit-local[:N]")
_BY_CODE = {2: UsageError, 3: DataError, 4: EnvError, 5: VerifyError}


@dataclass(frozen=True)
class Launcher:
    kind: str  # local | slurm | submitit-local
    workers: int = 1  # local: children at once

    @property
    def parallel(self) -> bool:
        return self.kind != "local" or self.workers > 1

    def __str__(self) -> str:
        return f"{self.kind}:{self.workers}" if self.kind != "slurm" and self.workers > 1 else self.kind


def parse(text: str | None) -> Launcher:
    """``local`` (one child after another in this process, the default), ``local:N``, ``slurm`` or
    ``submitit-local``; anything else is a UsageError (exit 2)."""
    text = (text or "local").strip()
    kind, colon, n = text.partition(":")
    if kind in ("local", "submitit-local") and not colon:
        return Launcher(kind, 1)
    if kind in ("local", "submitit-local"):
        if n.isdigit() and 1 <= int(n) <= 1024:
            return Launcher(kind, int(n))
        raise UsageError(f"--launcher {text}: N must be a whole number from 1 to 1024", fix=f"e.g. --launcher {kind}:2")
    if kind == "slurm" and not colon:
        return Launcher("slurm", 0)  # the cluster's queue decides how many run at once
    raise UsageError(f"unknown launcher '{text}'", fix=f"use --launcher {' | '.join(KINDS)}")


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def child_threads(workers: int) -> int:
    """Threads per worker: the machine's cores shared among the children running at once."""
    return max(1, cpu_count() // max(1, workers))


# -- the request across a process boundary --------------------------------------------------------------------
_PATHS = ("manifest", "data_dir", "runs_dir", "checkpoint")


def request_to_json(req) -> dict:
    d = dataclasses.asdict(req)
    for k in _PATHS:
        d[k] = None if d[k] is None else str(d[k])
    d["log_to"] = list(d["log_to"])
    return d


def request_from_json(d: dict):
    from .runner import Request

    d = dict(d)
    for k in _PATHS:
        d[k] = None if d.get(k) is None else Path(d[k])
    d["log_to"] = tuple(d.get("log_to") or ())
    d["launcher"] = "local"  # a worker runs a child's own sweeps (if any) in turn, in its own process
    names = {f.name for f in dataclasses.fields(Request)}
    return Request(**{k: v for k, v in d.items() if k in names})


def launch_dir(plan) -> Path:
    return Path(plan.request.runs_dir) / plan.spec.slug / ".launch"


def log_file(plan) -> Path:
    return launch_dir(plan) / f"{plan.path.name}.log"


def _job_files(plan, threads: int) -> tuple[Path, Path]:
    """Write the child's request (with the run id it must reach) beside its log; return (request, log)."""
    folder = launch_dir(plan)
    folder.mkdir(parents=True, exist_ok=True)
    req_file = folder / f"{plan.path.name}.request.json"
    from medrun.artifacts.rundir import atomic_write

    atomic_write(req_file, json.dumps({"request": request_to_json(plan.request), "run_id": plan.run_id,
                                       "run_dir": str(plan.path), "threads": threads}, indent=2))
    return req_file, log_file(plan)


def _child_env(plan, log: Path, threads: int) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "MEDRUN_CHILD_THREADS": str(threads), "MEDRUN_CHILD_LOG": str(log), "MEDRUN_CHILD_RUN": str(plan.path),
            "MEDRUN_PLAIN": "1", "PYTHONUNBUFFERED": "1"}


# -- the worker -----------------------------------------------------------------------------------------------
def work(req_file: str | Path) -> int:
    """Run one child from its request file (in a fresh process); the exit code of its error class on failure."""
    from . import runner

    job = json.loads(Path(req_file).read_text())
    threads = int(os.environ.get("MEDRUN_CHILD_THREADS") or job.get("threads") or 0)
    threads = threads or int(os.environ.get("SLURM_CPUS_PER_TASK") or 0) or cpu_count()
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        import torch

        torch.set_num_threads(threads)
        req = request_from_json(job["request"])
        p = runner.plan(req, log=log)
        if p.run_id != job["run_id"]:
            raise UsageError(f"the child planned in this process has run id {p.run_id[:12]}, the parent planned "
                             f"{job['run_id'][:12]} (code, data or manifest changed meanwhile)",
                             fix="run the command again")
        log(f"child {p.path} ({threads} thread{'s' * (threads > 1)})")
        result = runner.execute(p, log=log)
        log(f"complete {result['run_dir']}")
        return 0
    except MedrunError as e:
        log(f"error: {e.line()}")
        return e.exit_code
    except KeyboardInterrupt:
        log("error: interrupted: the run is left incomplete; the same command resumes it")
        return INTERRUPTED
    except Exception as e:
        env = runner.env_error(e)
        if env is not None:
            log(f"error: {env.line()}")
            return env.exit_code
        import traceback

        traceback.print_exc()
        log(f"error: {type(e).__name__}: {e}".splitlines()[0])
        return 1


def submitit_job(req_file: str, log: str, threads: int) -> int:
    """What a submitit job runs: the child's output into its log, then :func:`work`. A failure is raised, so
    that submitit reports the job failed and the parent reads the reason from the log."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.update({"MEDRUN_CHILD_THREADS": str(threads), "MEDRUN_CHILD_LOG": log, "MEDRUN_PLAIN": "1",
                       "MEDRUN_CHILD_RUN": json.loads(Path(req_file).read_text())["run_dir"]})
    code = work(req_file)
    sys.stdout.flush()
    sys.stderr.flush()
    if code:
        raise RuntimeError(f"medrun child failed with exit code {code}")
    return code


# -- the parent -----------------------------------------------------------------------------------------------
@dataclass
class _Slot:
    name: str
    plan: object
    state: str = "queued"  # queued | waiting (another process writes it) | running | complete | failed | reused
    reason: str = ""
    started: float = 0.0
    seconds: float = 0.0
    handle: object = None  # Popen or submitit Job
    log: Path | None = None
    code: int | None = None


def launch_children(launcher: Launcher, named_plans, log=print, title: str = "children") -> set[Path]:
    """Run every child that is not complete (or all with ``--force``) under the launcher; return the run paths it
    computed. The first failure stops new starts, lets the running ones end, and raises one line naming the child's
    run dir and log, with the exit code of the child's error class (killed by a signal: 130, resumable)."""
    from medrun.artifacts import RunDir

    slots, seen = [], set()
    for name, p in named_plans:
        s = _Slot(name, p)
        if p.path in seen:  # two children with one id: computed once
            s.state = "reused"
        elif RunDir(p.path).lock_held():  # another medrun process is writing it: wait, then reuse or resume it
            s.state = "waiting"
        elif RunDir(p.path).is_complete() and not p.request.force:
            s.state = "reused"
        seen.add(p.path)
        slots.append(s)
    todo = [s for s in slots if s.state in ("queued", "waiting")]
    board = _Board(slots, launcher, title, log)
    if not todo:
        board.close()
        return set()
    key = _sweep_key(slots)
    executor = _executor(launcher, todo[0].plan, key) if launcher.kind != "local" else None
    width = launcher.workers or len(todo)
    try:
        board.show()
        while True:
            running = [s for s in slots if s.state == "running"]
            failed = [s for s in slots if s.state == "failed"]
            queued = [s for s in slots if s.state == "queued"]
            if not failed:
                for s in queued[: max(0, width - len(running))]:
                    _start(s, launcher, executor)
                    board.changed(s)
            for s in running:
                if _poll(s):
                    board.changed(s)
            for s in slots:
                if s.state == "waiting" and not RunDir(s.plan.path).lock_held():
                    s.state = "reused" if RunDir(s.plan.path).is_complete() else "queued"
                    board.changed(s)
            busy = any(s.state in ("running", "waiting") for s in slots)
            if not busy and (failed or not any(s.state == "queued" for s in slots)):
                break
            board.tick()
            time.sleep(0.2)
    except KeyboardInterrupt:
        for s in slots:
            if s.state == "running":
                _stop(s)
        raise
    finally:
        board.close()
    failed = [s for s in slots if s.state == "failed"]
    if failed:
        raise _failure(failed[0], len(failed))
    return {s.plan.path for s in slots if s.state == "complete"}


def _sweep_key(slots) -> str:
    """The sweep's name for submitit's folder: its children's run ids (the same sweep finds the same folder)."""
    from medrun.artifacts import sha256_json

    return sha256_json([s.plan.run_id for s in slots])[:12]


def _start(s: _Slot, launcher: Launcher, executor) -> None:
    if launcher.kind == "slurm":  # the job's own CPUs (SLURM_CPUS_PER_TASK), or the manifest's launcher.cpus
        threads = int(getattr(getattr(s.plan.manifest, "launcher", None), "cpus", None) or 0)
    else:
        threads = child_threads(launcher.workers)
    req_file, log = _job_files(s.plan, threads)
    s.log, s.started, s.state = log, time.monotonic(), "running"
    if executor is None:
        with open(log, "w") as out:
            s.handle = subprocess.Popen([sys.executable, "-m", "medrun.pipelines.launch", str(req_file)],
                                        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env=_child_env(s.plan, log, threads))
    else:
        log.write_text("")
        s.handle = executor.submit(submitit_job, str(req_file), str(log), threads)


def _poll(s: _Slot) -> bool:
    """Update a running slot; True when it ended."""
    h = s.handle
    if isinstance(h, subprocess.Popen):
        code = h.poll()
        if code is None:
            return False
    else:
        if not h.done():
            return False
        code = 0
        try:
            h.result()
        except Exception as e:  # submitit's FailedJobError / UncompletedJobError: the reason is in the child's log
            code = _exit_from(e)
    s.seconds, s.code = time.monotonic() - s.started, code
    from medrun.artifacts import RunDir

    if code == 0 and RunDir(s.plan.path).is_complete():
        s.state = "complete"
        return True
    s.state = "failed"
    s.reason = _reason(s, code)
    _attach_log(s)
    return True


def _exit_from(e: Exception) -> int:
    import re

    m = re.search(r"(?:exit code|SystemExit:?|returned)\D{0,3}(-?\d+)", str(e))
    if m:
        return int(m.group(1))
    m = re.search(r"signal (\d+)|SIG(KILL|TERM)", str(e))
    return -9 if m else 1


def _reason(s: _Slot, code: int) -> str:
    lines = []
    with contextlib.suppress(OSError):
        lines = (s.log.read_text(errors="replace").splitlines() if s.log else [])
    errors = [ln[len("error: "):] for ln in lines if ln.startswith("error: ")]
    if errors:
        return errors[-1]
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    if code == 0:
        return "the worker ended but the run is not complete"
    return next((ln for ln in reversed(lines) if ln.strip()), f"exit code {code}")


def _attach_log(s: _Slot) -> None:
    """A failed child's log into its run's logs/ (the run is not sealed, so nothing it verifies changes)."""
    from medrun.artifacts import RunDir
    from medrun.artifacts.rundir import atomic_write

    run = RunDir(s.plan.path)
    if s.log and s.log.exists() and run.exists() and not run.is_complete():
        with contextlib.suppress(OSError):
            atomic_write(run.path / "logs" / "launcher.log", s.log.read_bytes())


def _where_log(s: _Slot) -> Path | None:
    in_run = Path(s.plan.path) / "logs" / "launcher.log"
    return in_run if in_run.exists() else s.log


def _failure(s: _Slot, n: int) -> MedrunError:
    more = f" ({n - 1} more child{'ren' * (n > 2)} failed)" if n > 1 else ""
    text = f"child {s.name} failed: {s.reason}{more}; run dir {s.plan.path}, log {_where_log(s)}"
    fix = "fix the cause and run the same command again: complete children are reused, the rest resume"
    code = s.code if s.code is not None else 1
    if code < 0 or code == INTERRUPTED:
        err = MedrunError(text, fix=fix)
        err.exit_code = INTERRUPTED
        return err
    err = _BY_CODE.get(code, MedrunError)(text, fix=fix)
    return err


def _stop(s: _Slot) -> None:
    h = s.handle
    with contextlib.suppress(Exception):
        if isinstance(h, subprocess.Popen):
            h.send_signal(signal.SIGTERM)  # the runner turns it into an interrupt: the run stays resumable
            h.wait(timeout=30)
        else:
            h.cancel()


# -- submitit -------------------------------------------------------------------------------------------------
def _executor(launcher: Launcher, plan, key: str):
    try:
        import submitit
    except ImportError:
        raise EnvError(f"--launcher {launcher}: submitit is not installed", fix="pip install submitit") from None
    folder = Path(plan.request.runs_dir) / ".submitit" / key
    cluster = "local" if launcher.kind == "submitit-local" else None
    if launcher.kind == "slurm":
        import shutil

        if shutil.which("sbatch") is None:
            raise EnvError("--launcher slurm: no `sbatch` on PATH (no SLURM cluster here)",
                           fix="run on a SLURM login node, or use --launcher local:N or submitit-local")
        cluster = "slurm"
    ex = submitit.AutoExecutor(folder=folder, cluster=cluster)
    section = getattr(plan.manifest, "launcher", None)
    params = _slurm_params(section) if cluster == "slurm" else {"timeout_min": _minutes(section)}
    ex.update_parameters(**params)
    return ex


def _minutes(section) -> int:
    return int(getattr(section, "time_min", None) or 60)


def _slurm_params(section) -> dict:
    out: dict = {"timeout_min": _minutes(section), "nodes": 1, "tasks_per_node": 1}
    if section is None:
        return out
    if section.partition:
        out["slurm_partition"] = section.partition
    if section.gpus:
        out["gpus_per_node"] = section.gpus
    if section.cpus:
        out["cpus_per_task"] = section.cpus
    if section.mem_gb:
        out["mem_gb"] = section.mem_gb
    if section.account:
        out["slurm_account"] = section.account
    if section.extra:
        out["slurm_additional_parameters"] = dict(section.extra)
    return out


def usable() -> dict[str, str]:
    """Which launchers work here, and why not (``medrun doctor``)."""
    import importlib.util
    import shutil

    has_submitit = importlib.util.find_spec("submitit") is not None
    out = {"local": f"yes ({cpu_count()} cores: local:N runs N children at once)"}
    out["submitit-local"] = "yes" if has_submitit else "no (pip install submitit)"
    if not has_submitit:
        out["slurm"] = "no (pip install submitit)"
    elif shutil.which("sbatch") is None:
        out["slurm"] = "no (no sbatch on PATH: not a SLURM node)"
    else:
        out["slurm"] = "yes"
    return out


# -- the live table -------------------------------------------------------------------------------------------
class _Board:
    """Children and their states: a rich table on a terminal, otherwise one plain line per change."""

    def __init__(self, slots, launcher, title, log):
        self.slots, self.launcher, self.title, self.log = slots, launcher, title, log
        self.live = None
        if sys.stderr.isatty() and os.environ.get("MEDRUN_PLAIN") is None:
            from rich.console import Console
            from rich.live import Live

            self.live = Live(self._table(), console=Console(stderr=True), refresh_per_second=4, transient=False)

    def _line(self, s: _Slot) -> str:
        i = self.slots.index(s) + 1
        extra = {"running": f" (log {s.log})", "complete": f" ({s.seconds:.1f} s)",
                 "failed": f": {s.reason}"}.get(s.state, "")
        return f"{self.title} {i}/{len(self.slots)} {s.name}: {s.state} {s.plan.path}{extra}"

    def _table(self):
        from rich.table import Table

        t = Table(title=f"{self.title}s on {self.launcher}", title_justify="left")
        for col in ("#", "child", "state", "time", "run", "reason"):
            t.add_column(col)
        colour = {"complete": "green", "reused": "green", "failed": "red", "running": "yellow", "waiting": "yellow"}
        now = time.monotonic()
        for i, s in enumerate(self.slots, 1):
            secs = s.seconds or (now - s.started if s.state == "running" else 0)
            t.add_row(str(i), s.name, f"[{colour.get(s.state, 'dim')}]{s.state}[/]", f"{secs:.0f} s" if secs else "",
                      s.plan.path.name, s.reason)
        return t

    def show(self):
        if self.live is not None:
            self.live.start()
        else:
            for s in self.slots:
                self.log(self._line(s))

    def changed(self, s):
        if self.live is not None:
            self.live.update(self._table())
        else:
            self.log(self._line(s))

    def tick(self):
        if self.live is not None:
            self.live.update(self._table())

    def close(self):
        if self.live is not None:
            with contextlib.suppress(Exception):
                self.live.stop()
        elif not any(s.state in ("queued", "running", "failed") for s in self.slots) and \
                all(s.state == "reused" for s in self.slots):
            for s in self.slots:
                self.log(self._line(s))


if __name__ == "__main__":
    sys.exit(work(sys.argv[1]))
