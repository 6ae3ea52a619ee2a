"""A scheduler that stops answering mid-search (SIGSTOP: what `docker pause` or a suspended VM does) ends the run, bounded.

Real processes: a `dask scheduler`, two `dask worker` processes and the trainer, each its own
process, as on the stack; the scheduler is frozen once the first fits have finished. The
trainer exits 3 within --scheduler-timeout (plus its client's bounded close), names the
address, writes no run folder and keeps its checkpoint; the rerun against the thawed scheduler
reuses the fits finished before the freeze and scores as an undisturbed run does.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

BIN = Path(sys.executable).parent
# 12 fits of about half a second each on 2 single-threaded workers: the search is under way when frozen.
JOB = [
    "--synthetic-rows", "20000", "--param", "n_estimators=10", "--param", "max_depth=4,6,8,10,12,None",
    "--cv", "2", "--no-shared-trees", "--workers", "2", "--workers-timeout", "60", "--json",
]  # fmt: skip
SILENCE_S = 4


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """Give a real scheduler's address and process, with two single-threaded workers of their own processes."""
    address = f"tcp://127.0.0.1:{free_port()}"
    logs = (tmp_path / "cluster.log").open("w")
    scheduler = subprocess.Popen(
        [BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1], "--dashboard-address", ":0"],
        stdout=logs,
        stderr=subprocess.STDOUT,
    )
    workers = subprocess.Popen(
        [BIN / "dask", "worker", address, "--nworkers", "2", "--nthreads", "1", "--dashboard-address", ":0"],
        stdout=logs,
        stderr=subprocess.STDOUT,
    )
    try:
        yield address, scheduler
    finally:
        for process in (workers, scheduler):
            os.kill(process.pid, signal.SIGCONT)
            process.terminate()
        for process in (workers, scheduler):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        logs.close()


def train(address: str, output: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "DASK_SCHEDULER_ADDRESS": address}
    command = [sys.executable, "-m", "skfleet", *JOB, "--output", str(output), *extra]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def frozen_mid_search(
    trainer: subprocess.Popen, scheduler: subprocess.Popen, then: signal.Signals | None = None
) -> tuple[float, int, str]:
    """Freeze the scheduler once TRAINER's first fits have finished (checkpointed), send THEN to the trainer if given.

    Give how long the trainer took to end after that, its exit code and its stderr.
    """
    lines: list[str] = []
    done = threading.Event()

    def read() -> None:
        for line in trainer.stderr:
            lines.append(line)
            if "Done" in line and " out of " in line:
                done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert done.wait(120), "".join(lines)[-3000:]
    os.kill(scheduler.pid, signal.SIGSTOP)
    if then is not None:
        time.sleep(1)
        trainer.send_signal(then)
    frozen = time.monotonic()
    try:
        trainer.wait(timeout=60)
    except subprocess.TimeoutExpired:
        trainer.kill()
        pytest.fail("the trainer waited on the frozen scheduler for more than 60 s:\n" + "".join(lines)[-3000:])
    ended = time.monotonic() - frozen
    reader.join(10)
    trainer.stdout.close()
    return ended, trainer.returncode, "".join(lines)


def result_of(process: subprocess.Popen, timeout: float) -> dict:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.splitlines()[-1])


def test_a_frozen_scheduler_ends_the_run_in_bounded_time_and_the_rerun_resumes(
    cluster: tuple[str, subprocess.Popen], tmp_path: Path
) -> None:
    address, scheduler = cluster
    output = tmp_path / "runs"
    ended, code, stderr = frozen_mid_search(train(address, output, "--scheduler-timeout", str(SILENCE_S)), scheduler)
    assert code == 3, stderr[-3000:]
    (error,) = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert f"the scheduler at {address} has not answered for" in error and "--scheduler-timeout 4" in error, error
    assert "Traceback" not in stderr, stderr[-3000:]
    assert [path.name for path in output.iterdir()] == [".checkpoints"]  # no run folder; the checkpoint kept
    # The bound: the silence, a poll, and the client's bounded close.
    assert ended < SILENCE_S + 20, f"ended {ended:.1f} s after the freeze"
    print(f"frozen scheduler: exit 3 {ended:.1f} s after the freeze")

    # SIGTERM (docker stop) on a run waiting on a frozen scheduler, its watchdog off: it ends as Ctrl-C does.
    os.kill(scheduler.pid, signal.SIGCONT)
    ended, code, stderr = frozen_mid_search(train(address, output, "--scheduler-timeout", "0"), scheduler, signal.SIGTERM)
    assert code == 130, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: interrupted; no run folder was written"], stderr[-3000:]
    assert "Traceback" not in stderr and ended < 20, (ended, stderr[-3000:])
    print(f"frozen scheduler: SIGTERM ended the run {ended:.1f} s after it was sent")

    os.kill(scheduler.pid, signal.SIGCONT)
    resumed = result_of(train(address, output), timeout=180)
    assert resumed["n_fits_resumed"] > 0
    undisturbed = result_of(train(address, tmp_path / "undisturbed", "--no-resume"), timeout=180)
    assert resumed["n_fits_resumed"] < undisturbed["n_fits"] == resumed["n_fits"]
    for key in ("best_params", "best_cv_score", "test_accuracy", "test_roc_auc"):
        assert resumed[key] == undisturbed[key], key
