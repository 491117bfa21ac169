"""Prices, worker cost, cost attribution and SLURM service units, against hand calculations.

Every expected figure is worked out in the comment beside it, so that a change to the
arithmetic shows up as a disagreement with the hand calculation, not just a new number.
"""

from __future__ import annotations

import dask
import pytest
from support import REPO

import packlab
from packlab.errors import ConfigError, PacklabError
from packlab.telemetry.cost import CostReport, JobInterval, WorkerInterval, attribute, attribute_service_units
from packlab.telemetry.pricing import (
    CURRENCIES,
    PRESETS,
    Pricing,
    billing,
    parse_tres,
    service_units,
    su_cost,
    worker_cost,
)

GIB = 2**30


def test_pricing_is_exported_lazily_and_frozen():
    p = packlab.Pricing(core_hour=0.04)
    assert isinstance(p, Pricing) and p.currency == "USD"
    with pytest.raises(AttributeError):
        p.core_hour = 1.0  # frozen
    assert isinstance(Pricing(core_hour=1).core_hour, float)  # canonical floats


def test_presets_are_valid_examples_and_listed():
    for name in PRESETS:
        assert isinstance(Pricing.preset(name), Pricing)
    aws = Pricing.preset("aws-on-demand")
    assert aws.core_hour > 0 and 0 < aws.spot_discount < 1
    with pytest.raises(PacklabError, match="Did you mean 'aws-on-demand'"):
        Pricing.preset("aws-ondemand")


def test_site_rates_come_from_the_config_section():
    assert Pricing.from_config() == Pricing()  # the shipped defaults: everything 0, USD
    with dask.config.set({"packlab.pricing.core-hour": 0.05, "packlab.pricing.currency": "EUR",
                          "packlab.pricing.spot-discount": 0.6}):
        p = Pricing.from_config()
    assert (p.core_hour, p.currency, p.spot_discount) == (0.05, "EUR", 0.6)
    with dask.config.set({"packlab.pricing.currency": "EURO"}), pytest.raises(ConfigError) as err:
        Pricing.from_config()
    assert "packlab.pricing.currency='EURO' is invalid" in str(err.value)
    assert "dask.config.set" in str(err.value)


def test_worker_cost_by_hand():
    p = Pricing(core_hour=0.04, gb_hour=0.005, gpu_hour=2.0, spot_discount=0.7, reserved_discount=0.4)
    # 4 cores x 0.04 = 0.16; 16 GiB x 0.005 = 0.08; 1 GPU x 2.0 = 2.0 -> 2.24 per hour
    assert worker_cost(p, cores=4, memory="16GiB", gpus=1, seconds=3600) == pytest.approx(2.24)
    # 90 minutes on demand: 2.24 x 1.5 = 3.36
    assert worker_cost(p, cores=4, memory=16 * GIB, gpus=1, seconds="90m") == pytest.approx(3.36)
    # spot: 2.24 x (1 - 0.7) = 0.672 per hour
    assert worker_cost(p, cores=4, memory="16GiB", gpus=1, seconds=3600,
                       market="spot") == pytest.approx(0.672)
    # reserved: 2.24 x (1 - 0.4) = 1.344 per hour
    assert worker_cost(p, cores=4, memory="16GiB", gpus=1, seconds=3600,
                       market="reserved") == pytest.approx(1.344)
    # no time held costs nothing; memory 0 is allowed (a price list by core only)
    assert worker_cost(p, cores=4, memory=0, seconds=0) == 0


def test_attribute_splits_a_worker_by_thread_and_reports_idle():
    p = Pricing(core_hour=1.0)
    # w1: 2 cores (2 threads) held 0..3600 s: 2 core-hours = 2.00
    held = [WorkerInterval("w1", 0, 3600, cores=2, memory=0)]
    busy = [JobInterval("a", "w1", 0, 1800),       # 1 of 2 threads for 0.5 h: 2.00/h x 1/2 x 0.5 h = 0.50
            JobInterval("b", "w1", 900, 2700)]     # 1 of 2 threads for 0.5 h: 0.50
    r = attribute(p, held, busy)
    assert r.jobs == pytest.approx({"a": 0.5, "b": 0.5})
    # idle: 2.00 - 0.50 - 0.50 = 1.00 (thread-hours unused: 2 x 1 h - 2 x 0.5 h = 1 thread-hour)
    assert (r.total, r.idle) == pytest.approx((2.0, 1.0))
    assert r.idle_share == pytest.approx(0.5)
    assert (r.held_seconds, r.busy_seconds, r.unheld_seconds) == (3600, 3600, 0)


def test_attribute_prices_spot_and_reserved_workers_with_their_discounts():
    p = Pricing(core_hour=0.1, gb_hour=0.01, spot_discount=0.5, reserved_discount=0.25)
    held = [
        # on demand, 1 core + 4 GiB: 0.1 + 0.04 = 0.14/h, held 2 h = 0.28
        WorkerInterval("od", 0, 7200, cores=1, memory=4 * GIB),
        # spot, same size: 0.14 x 0.5 = 0.07/h, held 2 h = 0.14
        WorkerInterval("sp", 0, 7200, cores=1, memory=4 * GIB, market="spot"),
        # reserved, same size: 0.14 x 0.75 = 0.105/h, held 1 h = 0.105
        WorkerInterval("rs", 3600, 7200, cores=1, memory="4GiB", market="reserved"),
    ]
    busy = [JobInterval("j1", "od", 0, 3600),    # 1 h on od: 0.14
            JobInterval("j1", "sp", 0, 7200),    # 2 h on sp: 0.14  -> j1 = 0.28
            JobInterval("j2", "rs", 3600, 5400)]  # 0.5 h on rs: 0.0525
    r = attribute(p, held, busy)
    assert r.jobs == pytest.approx({"j1": 0.28, "j2": 0.0525})
    # total 0.28 + 0.14 + 0.105 = 0.525; idle = 0.525 - 0.28 - 0.0525 = 0.1925
    # (od idle 1 h = 0.14, rs idle 0.5 h = 0.0525)
    assert (r.total, r.idle) == pytest.approx((0.525, 0.1925))
    assert r.total == pytest.approx(sum(r.jobs.values()) + r.idle)


def test_oversubscribed_threads_share_the_whole_worker_and_nothing_is_idle():
    p = Pricing(core_hour=3.0)
    # 1 core, 1 thread, 3.00/h, held 1 h; three jobs of 1 thread all running the whole hour:
    # each pays 1/3 of 3.00 = 1.00; idle 0
    held = [{"worker": "w", "start": 0, "stop": 3600, "cores": 1, "memory": 0}]  # a dict row
    busy = [{"job": j, "worker": "w", "start": 0, "stop": 3600} for j in "xyz"]
    r = attribute(p, held, busy)
    assert r.jobs == pytest.approx({"x": 1.0, "y": 1.0, "z": 1.0}) and r.idle == pytest.approx(0)


def test_a_job_on_several_threads_pays_for_them():
    p = Pricing(core_hour=1.0)
    # 4 cores, 4.00/h, held 1 h; job "wide" on 3 threads for 1 h: 3/4 x 4.00 = 3.00; idle 1.00
    r = attribute(p, [WorkerInterval("w", 0, 3600, cores=4, memory=0)],
                  [JobInterval("wide", "w", 0, 3600, threads=3)])
    assert r.jobs["wide"] == pytest.approx(3.0) and r.idle == pytest.approx(1.0)


def test_busy_time_outside_held_intervals_is_counted_not_priced():
    p = Pricing(core_hour=1.0)
    # w held 1000..2000 s; job busy 500..1500 s: 500 s inside (priced: 1.00/h x 500 s = 0.13889),
    # 500 s outside (unheld); a job on a worker never held: 100 s unheld
    r = attribute(p, [WorkerInterval("w", 1000, 2000, cores=1, memory=0)],
                  [JobInterval("a", "w", 500, 1500), JobInterval("ghost", "nowhere", 0, 100)])
    assert r.jobs["a"] == pytest.approx(500 / 3600)
    assert r.jobs["ghost"] == 0
    assert r.unheld_seconds == pytest.approx(600)
    # total 1000 s x 1.00/h = 0.27778; idle = total - a = 500 s = 0.13889
    assert r.idle == pytest.approx(500 / 3600) and r.total == pytest.approx(1000 / 3600)


def test_a_worker_held_twice_at_once_is_refused():
    with pytest.raises(PacklabError, match="worker 'w' is held twice at once"):
        attribute(Pricing(), [WorkerInterval("w", 0, 10, cores=1, memory=0),
                              WorkerInterval("w", 5, 20, cores=1, memory=0)], [])
    # back to back is fine (a restart under the same name)
    r = attribute(Pricing(core_hour=1), [WorkerInterval("w", 0, 1800, cores=1, memory=0),
                                         WorkerInterval("w", 1800, 3600, cores=1, memory=0)], [])
    assert r.total == pytest.approx(1.0)


def test_an_empty_run_costs_nothing():
    r = attribute(Pricing(core_hour=1), [], [])
    assert r == CostReport(currency="USD", total=0.0, idle=0.0)
    assert r.idle_share == 0.0


def test_slurm_service_units_by_hand():
    # TRESBillingWeights="CPU=1.0,Mem=0.25G": 4 CPUs + 16 GiB x 0.25 = 4 + 4 = billing 8
    tres = "cpu=4,mem=16G,node=1,billing=8"
    assert parse_tres(tres) == {"cpu": "4", "mem": "16G", "node": "1", "billing": "8"}
    assert billing(tres) == 8.0
    # 8 billing x 1 h 30 min = 12 SU (sreport -t hours -T billing)
    assert service_units(8, "01:30:00") == 12.0
    assert service_units(8, 5400) == 12.0 and service_units(8, "90m") == 12.0
    assert service_units(8, "1-00:00:00") == 192.0  # a day: 8 x 24
    assert service_units(8, "00:00:00") == 0.0  # just started
    # a spot partition weighted CPU=0.5: billing 2 for 4 CPUs; 2 x 2 h = 4 SU at 0.02 = 0.08
    units = service_units(billing("cpu=4,billing=2"), 7200)
    assert units == 4.0 and su_cost(Pricing(su_price=0.02), units) == pytest.approx(0.08)


def test_the_currency_table_has_the_common_codes():
    assert {"USD", "EUR", "GBP", "JPY", "CHF"} <= set(CURRENCIES)
    with pytest.raises(PacklabError) as err:
        Pricing(currency="usd")
    assert "Write 'USD' (upper case)" in str(err.value)
    with pytest.raises(PacklabError) as err:
        Pricing(currency="XYZ")
    assert "currency='XYZ' is invalid" in str(err.value) and "Known codes:" in str(err.value)


def test_settings_set_by_environment_variables_are_read(monkeypatch):
    # dask stores DASK_PACKLAB__PRICING__CORE_HOUR under "core_hour": read key by key, both match
    monkeypatch.setenv("DASK_PACKLAB__PRICING__CORE_HOUR", "0.07")
    monkeypatch.setenv("DASK_PACKLAB__TELEMETRY__ADVISOR__CPU_EFFICIENCY", "0.3")
    monkeypatch.setenv("DASK_PACKLAB__TELEMETRY__ALERTS__UTILISATION_LOW", "0.2")
    dask.config.refresh()
    try:
        from packlab.telemetry.alerts import default_rules
        from packlab.telemetry.usage import Thresholds

        assert Pricing.from_config().core_hour == 0.07
        assert Thresholds.from_config().cpu_efficiency == 0.3
        assert [r.threshold for r in default_rules() if r.name == "utilisation-low"] == [0.2]
    finally:
        monkeypatch.undo()
        dask.config.refresh()


def test_the_readme_example_runs_and_says_what_it_prints():
    import pathlib

    text = (pathlib.Path(REPO) / "README.md").read_text()
    section = text.split("## Telemetry", 1)[1].split("The pure logic underneath", 1)[1]
    block = section.split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict = {}
    exec(block, scope)
    r = scope["r"]
    # 2 cores x 0.04 + 4 GiB x 0.005 = 0.10 per hour, held 1 h; "a" on 1 of 2 threads for 0.5 h
    assert (r.jobs, r.idle, r.idle_share) == ({"a": 0.025}, 0.075, 0.75)
    assert "({'a': 0.025}, 0.075, 0.75)" in block


def test_service_units_per_job_by_hand():
    # two SLURM worker jobs: "batch" billing 8 (4 CPUs + 16 GiB at 0.25/GiB), "spot" billing 2
    # (CPU weight 0.5 on the spot partition), each running one 4-thread worker
    held = [WorkerInterval("wb", 0, 3600, cores=4, memory=16 * GIB, billing=8),   # 8 x 1 h = 8 SU
            WorkerInterval("ws", 0, 7200, cores=4, memory=16 * GIB, billing=2)]   # 2 x 2 h = 4 SU
    busy = [JobInterval("a", "wb", 0, 1800, threads=4),   # whole wb for 0.5 h: 8 x 0.5 = 4 SU
            JobInterval("b", "ws", 0, 7200, threads=2)]   # half of ws for 2 h: 2 x 1/2 x 2 = 2 SU
    r = attribute_service_units(held, busy)
    assert r.currency == "SU" and r.jobs == pytest.approx({"a": 4.0, "b": 2.0})
    # total 8 + 4 = 12 SU; idle 12 - 4 - 2 = 6 SU (wb idle 0.5 h = 4, ws half idle 2 h = 2)
    assert (r.total, r.idle) == pytest.approx((12.0, 6.0))
    # at 0.02 per SU: a costs 0.08
    assert su_cost(Pricing(su_price=0.02), r.jobs["a"]) == pytest.approx(0.08)
    with pytest.raises(PacklabError, match=r"held\[0\]\.billing=None is invalid"):
        attribute_service_units([WorkerInterval("w", 0, 1, cores=1, memory=0)], [])
