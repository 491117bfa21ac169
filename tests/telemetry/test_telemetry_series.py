"""Ring buffers, downsampling by age (and its bound), and the trends module: percentiles,
slopes and trend lines."""

from __future__ import annotations

import itertools
import math

import dask
import numpy as np
import pytest

from packlab.telemetry.series import RingBuffer, aggregation_for, downsample, history_tiers, max_rows, select
from packlab.telemetry.trends import change, describe_change, describe_trend, percentile, slope

HOUR, DAY = 3600, 86400


def test_the_ring_buffer_keeps_the_last_samples_and_counts_the_rest():
    b = RingBuffer(1000)
    for t in range(2500):
        b.append(t, t % 7)
    assert len(b) == 1000 and b.dropped == 1500
    assert b.rows()[0] == (1500.0, 1500 % 7) and b.rows()[-1] == (2499.0, 2499 % 7)
    batch = b.drain()
    assert len(batch) == 1000 and len(b) == 0 and b.rows() == []


def history(now):
    """Nine days of samples: every 20 s, and every 0.5 s in the last two hours."""
    rows = [(float(t), float(t % 97)) for t in range(int(now - 9 * DAY), int(now - 2 * HOUR), 20)]
    rows += [(now - 2 * HOUR + i * 0.5, float(i % 13)) for i in range(int(4 * HOUR))]
    return rows


def test_downsampling_keeps_one_row_per_bucket_of_its_age_and_stays_under_the_bound():
    now = 10 * DAY + 0.25
    rows = history(now)
    out = downsample(rows, now)
    assert len(out) <= max_rows(9 * DAY) < len(rows)
    tiers = history_tiers()
    assert tiers == [(HOUR, 1.0), (7 * DAY, 60.0), (math.inf, 3600.0)]
    # away from the tiers' edges (one coarser bucket wide), rows are spaced by their tier's resolution
    for lo, hi, res in [(0, HOUR - 60, 1), (HOUR + 60, 7 * DAY - 3600, 60), (7 * DAY + 3600, math.inf, 3600)]:
        part = [t for t, _ in out if lo <= now - t < hi]
        assert len(part) > 10, (lo, hi)
        assert all(t % res == 0 for t in part)  # aligned on the bucket
        assert all(b - a == res for a, b in itertools.pairwise(part)), res  # one row per bucket, none missing
    # the last hour: 0.5 s samples merged in pairs into 1 s rows; the mean of (i, i + 1) % 13
    recent = [r for r in out if now - r[0] < HOUR - 1]
    assert 3590 <= len(recent) <= 3601
    # downsampling again changes nothing (buckets are aligned)
    assert downsample(out, now) == out


def test_a_month_at_one_hertz_fits_the_bound():
    # the bound's arithmetic: the hour and one minute at 1 s (3660 + 1), the week and one hour
    # at 60 s (604800 / 60 + 1), the 23 days beyond at 1 h (552 + 1)
    assert max_rows(30 * DAY) == 3661 + 10081 + 553
    now = 2 * HOUR + 0.5
    rows = [(float(t), 1.0) for t in range(int(now) + 1)]  # 1 Hz for two hours: 7201 rows
    out = downsample(rows, now)
    # the last 3601 seconds one row each (t = 3600..7200), the first hour one row per minute
    assert len(out) <= max_rows(now) and len(out) == 3601 + 60


AGG = [("mean", 2.0), ("max", 4.0), ("min", 0.0), ("last", 2.0), ("sum", 6.0)]


@pytest.mark.parametrize("how, want", AGG)
def test_each_aggregation_per_bucket(how, want):
    rows = [(0, 0.0), (10, 4.0), (20, 2.0)]  # one 60 s bucket
    assert downsample(rows, now=10 * DAY, how=how) == [(0.0, want)]


def test_the_metric_kind_picks_the_aggregation():
    assert [aggregation_for(k) for k in ("gauge", "peak", "counter")] == ["mean", "max", "last"]


def test_the_history_setting_moves_the_tiers():
    with dask.config.set({"packlab.telemetry.history.per-second": "10m",
                          "packlab.telemetry.history.per-minute": "1d"}):
        assert history_tiers() == [(600.0, 1.0), (86400.0, 60.0), (math.inf, 3600.0)]


def test_future_rows_stay_at_the_finest_resolution():
    assert downsample([(100.0, 1.0), (100.4, 3.0)], now=0) == [(100.0, 2.0)]


def test_percentiles_agree_with_numpy():
    rng = np.random.default_rng(7)
    xs = rng.exponential(60, 501).tolist()
    for q in (0, 50, 95, 99, 100):
        assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))
    assert percentile([5], 95) == 5


def test_slope_is_least_squares():
    rows = [(0, 1), (10, 2), (20, 6), (30, 7)]
    fit = np.polyfit([r[0] for r in rows], [r[1] for r in rows], 1)[0]
    assert slope(rows) == pytest.approx(fit)


def test_select_is_inclusive_and_sorted():
    assert select([(3, 3), (1, 1), (2, 2)], since=1, until=2) == [(1.0, 1.0), (2.0, 2.0)]


def test_trend_lines_as_on_the_dashboard():
    assert describe_change("Avg duration", 12.5, 15, unit="min") == "Avg duration 12.5 min, down from 15"
    assert describe_change("Avg duration", 15, 12.5, unit="min") == "Avg duration 15 min, up from 12.5"
    assert describe_trend("Cost trend", 1.15, 1.0) == "Cost trend up 15 %"
    assert describe_trend("Cost trend", 0.8, 1.0) == "Cost trend down 20 %"
    assert describe_trend("Cost trend", 1.001, 1.0) == "Cost trend flat"
    assert change(1.15, 1.0) == pytest.approx(0.15) and change(3, 0) is None
