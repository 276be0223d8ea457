"""The histogram reader and its quantile estimate (pure)."""

from __future__ import annotations

import math

import pytest

from bench.promtext import Histogram, parse_histogram

TEXT = """\
# HELP stellwerk_resolution_seconds Resolution latency
# TYPE stellwerk_resolution_seconds histogram
stellwerk_resolution_seconds_bucket{le="0.001"} 10
stellwerk_resolution_seconds_bucket{le="0.002"} 30
stellwerk_resolution_seconds_bucket{le="0.005"} 90
stellwerk_resolution_seconds_bucket{le="+Inf"} 100
stellwerk_resolution_seconds_sum 0.31
stellwerk_resolution_seconds_count 100
other_metric_bucket{le="0.001"} 999
"""


def test_parses_buckets_sum_and_count() -> None:
    h = parse_histogram(TEXT, "stellwerk_resolution_seconds")
    assert h is not None
    assert h.buckets == ((0.001, 10.0), (0.002, 30.0), (0.005, 90.0), (math.inf, 100.0))
    assert h.sum == pytest.approx(0.31)
    assert h.count == 100


def test_quantiles_interpolate_inside_the_bucket() -> None:
    h = parse_histogram(TEXT, "stellwerk_resolution_seconds")
    assert h is not None
    # rank 50 lies in (0.002, 0.005], 20 of its 60 observations in: 0.002 + 0.003 * 20/60
    assert h.quantile(0.5) == pytest.approx(0.003)
    assert h.quantile(0.05) == pytest.approx(0.0005)
    # rank 99 is in +Inf: the largest finite bound is reported
    assert h.quantile(0.99) == pytest.approx(0.005)


def test_label_sets_are_summed() -> None:
    text = (
        'h_bucket{shard="a",le="1"} 1\nh_bucket{shard="b",le="1"} 2\n'
        'h_bucket{shard="a",le="+Inf"} 1\nh_bucket{shard="b",le="+Inf"} 3\n'
        "h_count 4\nh_sum 2.5\n"
    )
    h = parse_histogram(text, "h")
    assert h is not None and h.buckets == ((1.0, 3.0), (math.inf, 4.0))


def test_delta_between_scrapes() -> None:
    before = Histogram(((0.001, 5.0), (math.inf, 5.0)), 0.002, 5.0)
    after = Histogram(((0.001, 5.0), (math.inf, 9.0)), 0.1, 9.0)
    delta = after.minus(before)
    assert delta.buckets == ((0.001, 0.0), (math.inf, 4.0))
    assert delta.count == 4
    assert delta.quantile(0.5) == pytest.approx(0.001)


@pytest.mark.parametrize(
    "text",
    ["", "garbage\n", 'h_bucket{le="abc"} 3\n', 'h_bucket{le="1"} notanumber\n', "h_bucket 3\n"],
)
def test_absent_or_malformed_histograms_are_none(text: str) -> None:
    assert parse_histogram(text, "h") is None


def test_empty_histogram_has_no_quantile() -> None:
    h = Histogram(((0.001, 0.0), (math.inf, 0.0)), 0.0, 0.0)
    assert h.quantile(0.5) is None
    with pytest.raises(ValueError):
        h.quantile(1.5)
