"""The shared DAG shapes and the table's arithmetic (pure)."""

from __future__ import annotations

import pytest

from bench import report, shapes


def _check_dag(nodes: list[shapes.Node]) -> None:
    seen: set[str] = set()
    for node in nodes:  # dependencies come first: the list is a topological order
        assert node.id not in seen
        assert all(d in seen for d in node.deps), node
        seen.add(node.id)


def test_shapes_have_the_issue_sizes() -> None:
    assert len(shapes.chain()) == 40
    assert len(shapes.diamond()) == 20
    assert len(shapes.diamond(shapes.FAN_TASKS)) == 1000
    assert len(shapes.layered()) == 10_000
    assert len(shapes.held()) == 100
    for nodes in (shapes.chain(), shapes.diamond(), shapes.layered(), shapes.held()):
        _check_dag(nodes)


def test_diamond_fans_out_and_in() -> None:
    nodes = shapes.diamond(5)
    assert nodes[0].deps == ()
    assert all(n.deps == ("src",) for n in nodes[1:-1])
    assert nodes[-1].deps == ("m0", "m1", "m2")


def test_layered_links_each_task_to_the_layer_above() -> None:
    nodes = shapes.layered(300, width=100, fan_in=3)
    below = [n for n in nodes if n.id.startswith("L2-")]
    assert len(below) == 100
    assert all(1 <= len(n.deps) <= 3 and all(d.startswith("L1-") for d in n.deps) for n in below)


@pytest.mark.parametrize("bad", [lambda: shapes.chain(0), lambda: shapes.diamond(2)])
def test_degenerate_shapes_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        bad()  # type: ignore[operator]


def test_ratios_are_pair_by_pair_within_a_run() -> None:
    runs = [
        {
            "stellwerk": {"tasks_per_s": 2000},
            "gleitzeit_redis": {"tasks_per_s": 1000},
            "celery_redis": {"tasks_per_s": 500},
        },
        {
            "stellwerk": {"tasks_per_s": 1000},
            "gleitzeit_redis": {"tasks_per_s": 1000},
            "celery_redis": {"tasks_per_s": 0},
        },
    ]
    summary = report.aggregate(runs)
    assert summary["ratios"]["vs_gleitzeit"]["values"] == [2.0, 1.0]
    assert summary["ratios"]["vs_celery"]["values"] == [4.0]  # a zero throughput has no ratio
    stellwerk = summary["systems"]["stellwerk"]["tasks_per_s"]
    assert (stellwerk["min"], stellwerk["median"], stellwerk["max"]) == (1000, 1500, 2000)


def test_missing_and_non_numeric_figures_are_left_out() -> None:
    runs = [{"stellwerk": {"per_hop_ms": None, "resolution_p50_ms": "n/a", "tasks_per_s": True}}]
    summary = report.aggregate(runs)
    assert summary["systems"]["stellwerk"] == {}
    table = report.markdown(summary)
    assert "tasks/s" not in table.split("\n\n")[0].split("\n", 2)[-1]


def test_markdown_marks_missed_targets() -> None:
    runs = [{"stellwerk": {"per_hop_ms": 2.0, "tasks_per_s": 2500.0}}]
    table = report.markdown(report.aggregate(runs))
    hop = next(line for line in table.splitlines() if line.startswith("| per hop"))
    tps = next(line for line in table.splitlines() if line.startswith("| tasks/s, 100"))
    assert hop.endswith("**no** |") and tps.endswith("yes |")
