"""The shared DAG shapes and the table's arithmetic (pure)."""

from __future__ import annotations

import argparse

import pytest

from bench import report, run, shapes


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


def test_hop_and_cpu_ratios_divide_stellwerk_by_the_peer_within_a_run() -> None:
    runs = [
        {
            "stellwerk": {"per_hop_ms": 1.2, "cpu_us_per_task": 300.0},
            "gleitzeit_redis": {"per_hop_ms": 0.8, "cpu_us_per_task": 600.0},
            "celery_redis": {"cpu_us_per_task": 1500.0},
        }
    ]
    ratios = report.aggregate(runs)["ratios"]
    assert ratios["hop_vs_gleitzeit"]["median"] == pytest.approx(1.5)
    assert ratios["cpu_vs_gleitzeit"]["median"] == pytest.approx(0.5)
    assert ratios["cpu_vs_celery"]["median"] == pytest.approx(0.2)
    table = report.markdown(report.aggregate(runs))
    hop = next(line for line in table.splitlines() if "`hop_vs_gleitzeit`" in line)
    assert hop.endswith("**no** |")


def test_the_document_has_the_user_path_and_cpu_keys_at_the_top() -> None:
    figures = {
        "cli_hop_ms": 2.0,
        "watch_overhead": 1.6,
        "cpu_us_per_task": 400.0,
        "cpu_us_per_task_2_resolvers": 480.0,
        "cpu_ratio_2_resolvers": 1.2,
        "per_hop_ms": 1.0,
    }
    runs = [
        {
            "stellwerk": figures,
            "gleitzeit_redis": {"per_hop_ms": 0.8, "cpu_us_per_task": 600.0},
            "celery_redis": {"cpu_us_per_task": 1500.0},
        }
    ]
    doc = run._document(argparse.Namespace(quick=True), runs, {})
    assert doc["cpu_us_per_task"] == {
        "stellwerk": 400.0,
        "gleitzeit_redis": 600.0,
        "celery": 1500.0,
    }
    assert doc["hop_vs_gleitzeit"] == pytest.approx(1.25)
    for key in ("cli_hop_ms", "watch_overhead", "cpu_us_per_task_2_resolvers"):
        assert doc[key] == figures[key]
    assert doc["cpu_ratio_2_resolvers"] == pytest.approx(1.2)
