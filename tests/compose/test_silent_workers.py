"""A worker that stops answering without dying, on the Compose stack: the search goes on without it; a frozen scheduler ends it.

A silent network (tests/faults.py: every packet but loopback's dropped in its network namespace)
is injected into the worker container that holds the training data while fits run. The scheduler
drops the worker within 2 x worker-ttl + 30 s (docker/dask.yaml), its fits run on the other
worker, the trainer says which worker went and why, and the scores are those of an undisturbed
run. Healed, the worker's container restarts (its restart policy) and rejoins.

A frozen worker (`docker pause`: the worker, its nanny, everything in the container) takes the
same path in Dask, and is the VM fleet's case, a frozen VM (tests/ansible/test_silent_vms.py).
"""

from __future__ import annotations

import re
import subprocess
import time

import pytest
from distributed import Client

from skfleet.cluster import identity
from tests.faults import DROP_BOUND_S, FAULTS, REJOIN_STEADY_S
from tests.stack import DISTURBED_GRID, N_WORKERS, Stack, data_holder, scores_of, wait_for, wait_for_steady, worker_container
from tests.vms import docker_client

pytestmark = pytest.mark.docker

# What the surviving worker then needs for the fits that were left.
FINISH_S = 60


@pytest.fixture(scope="module")
def undisturbed(stack: Stack, undisturbed_run: subprocess.CompletedProcess[str]) -> dict[str, object]:
    return scores_of(stack, undisturbed_run)


@pytest.mark.parametrize("fault", ["silent network"])
def test_a_worker_that_stops_answering_is_dropped_in_bounded_time_and_the_scores_stay(
    stack: Stack, undisturbed: dict[str, object], fault: str
) -> None:
    inject, heal = FAULTS[fault]
    training = stack.train_in_background(*DISTURBED_GRID)
    with Client(f"tcp://127.0.0.1:{stack.scheduler_port}", timeout=30) as client:
        holder = wait_for(lambda: data_holder(client), "scattered training data and running fits", timeout=120)
        container = worker_container(stack, holder)
        inject(container)
        injected = time.monotonic()
        try:
            wait_for(lambda: holder not in identity(client)["workers"], f"the {fault} worker to be dropped",
                     timeout=DROP_BOUND_S + 15)  # fmt: skip
            dropped = time.monotonic() - injected
            stdout, stderr = training.communicate(timeout=FINISH_S + DROP_BOUND_S)
            finished = time.monotonic() - injected
        finally:
            heal(container)
            if training.poll() is None:
                training.kill()
        healed = time.monotonic()
        # It may join, be restarted by the scheduler's restart request that waited out the silence, and join again.
        rejoined = wait_for_steady(lambda: len(identity(client)["workers"]) == N_WORKERS, "the worker to rejoin",
                                   steady_s=REJOIN_STEADY_S, timeout=180) - healed  # fmt: skip
    assert training.returncode == 0, stderr
    assert scores_of(stack, subprocess.CompletedProcess(training.args, 0, stdout, stderr)) == undisturbed
    assert f"worker {holder} dropped by the scheduler" in stderr or f"({holder}) dropped by the scheduler" in stderr, stderr
    assert "sent no heartbeat" in stderr or "connection to the scheduler broke" in stderr
    print(
        f"{fault} worker: dropped {dropped:.1f} s after the fault (bound {DROP_BOUND_S:.0f} s), search done "
        f"{finished:.1f} s after it with the undisturbed scores; rejoined {rejoined:.1f} s after healing"
    )


def test_a_frozen_scheduler_ends_the_run_in_bounded_time_and_the_stack_comes_back(stack: Stack) -> None:
    """`docker pause` of the scheduler mid-search: exit 3 within --scheduler-timeout, the address named; unpaused, all is back."""
    silence = 8
    before = stack.run_folders()
    training = stack.train_in_background(*DISTURBED_GRID, "--scheduler-timeout", str(silence))
    scheduler = stack.compose("ps", "--quiet", "scheduler").stdout.strip()
    with Client(f"tcp://127.0.0.1:{stack.scheduler_port}", timeout=30) as client:
        wait_for(lambda: data_holder(client), "scattered training data and running fits", timeout=120)
        docker_client().containers.get(scheduler).pause()
        paused = time.monotonic()
        try:
            _, stderr = training.communicate(timeout=silence + 45)
            ended = time.monotonic() - paused
        finally:
            docker_client().containers.get(scheduler).unpause()
            if training.poll() is None:
                training.kill()

        # Whole and idle: every worker back, the gone trainer's fits released (the next test's stack is this one).
        def idle() -> bool:
            return len(identity(client)["workers"]) == N_WORKERS and not any(client.processing().values())

        back = wait_for_steady(idle, "the workers, idle, after the unpause", steady_s=REJOIN_STEADY_S, timeout=180) - paused
    assert training.returncode == 3, stderr[-3000:]
    (error,) = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert re.search(r"the scheduler at tcp://\S+:8786 has not answered for \d+ s", error), error
    assert "Traceback" not in stderr, stderr[-3000:]
    assert stack.run_folders() == before
    assert ended < silence + 20, f"the trainer ended {ended:.1f} s after the pause"
    print(f"frozen scheduler (docker pause): exit 3 {ended:.1f} s after it (--scheduler-timeout {silence})")
    print(f"frozen scheduler (docker pause): the stack whole again {back:.1f} s after it")
