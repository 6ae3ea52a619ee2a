"""The live progress bar: on a terminal, redrawn in place; elsewhere joblib's log lines."""

from __future__ import annotations

import io

import pytest
from distributed import Client, LocalCluster

from skfleet import data, model, search
from skfleet.config import SearchConfig
from skfleet.progress import ProgressBar, clock, live_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_bar_counts_fits_and_estimates_what_is_left() -> None:
    bar = ProgressBar(75, Terminal())
    assert bar.line(0) == "[" + "." * 30 + "] 0/75 fits  0:00 elapsed  estimating"
    bar.done = 25
    assert bar.line(40) == "[" + "#" * 10 + "." * 20 + "] 25/75 fits  0:40 elapsed  ~1:20 left"
    bar.done = 75
    assert bar.line(3725).endswith("75/75 fits  1:02:05 elapsed  done")
    assert clock(59.6) == "1:00"


def test_only_a_terminal_gets_a_bar() -> None:
    assert live_bar(3, io.StringIO()) is None
    assert isinstance(live_bar(3, Terminal()), ProgressBar)


@pytest.mark.cluster
def test_a_search_on_a_terminal_draws_the_bar_instead_of_log_lines(monkeypatch, capsys) -> None:
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    frame = data.load(None, synthetic_rows=2000).frame
    features, target = model.feature_matrix(frame)
    grid = {"classifier__n_estimators": [2, 4], "classifier__max_depth": [3]}
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        search.run(search.grid_search(model.build_pipeline(), grid, SearchConfig(), verbose=True), features, target, client)
    drawn = terminal.getvalue()
    assert "\r[" + "#" * 30 + "] 6/6 fits  " in drawn and drawn.endswith("done\n"), drawn
    assert "Done" not in drawn  # joblib's lines are for logs, not terminals
