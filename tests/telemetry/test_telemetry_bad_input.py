"""Bad input to every public function of packlab.telemetry: a PacklabError (a ValueError)
whose message names the field and the value given, and says what was expected."""

from __future__ import annotations

import pytest

from packlab.errors import PacklabError
from packlab.telemetry.advisor import Finding, findings, right_size
from packlab.telemetry.alerts import Rule, evaluate
from packlab.telemetry.cost import JobInterval, WorkerInterval, attribute, attribute_service_units
from packlab.telemetry.pricing import Pricing, billing, parse_tres, service_units, su_cost, worker_cost
from packlab.telemetry.series import RingBuffer, downsample, max_rows, select
from packlab.telemetry.trends import describe_change, describe_trend, percentile, slope
from packlab.telemetry.usage import RunSummary, SlurmJobUsage, Thresholds, WorkerUsage

NAN, INF = float("nan"), float("inf")
P = Pricing(core_hour=0.04)
OK_RULE = Rule("busy", "utilisation", "above_for", 0.9)
W = dict(cores=2, memory="4GiB", seconds=60)
HELD = dict(worker="w", start=0, stop=10, cores=1, memory=0)
WU = dict(name="w", cores=2, memory="4GiB", held_seconds=60)

CASES = [
    # pricing
    (lambda: Pricing(core_hour=-1), "core_hour=-1 is invalid"),
    (lambda: Pricing(gb_hour="0.005"), "gb_hour='0.005' is invalid"),
    (lambda: Pricing(gpu_hour=NAN), "gpu_hour=nan is invalid"),
    (lambda: Pricing(gpu_hour=True), "gpu_hour=True is invalid"),
    (lambda: Pricing(su_price=INF), "su_price=inf is invalid"),
    (lambda: Pricing(spot_discount=1.0), "spot_discount=1.0 is invalid: expected a fraction"),
    (lambda: Pricing(reserved_discount=-0.1), "reserved_discount=-0.1 is invalid"),
    (lambda: Pricing(spot_discount="30%"), "spot_discount='30%' is invalid"),
    (lambda: Pricing(currency="XYZ"), "currency='XYZ' is invalid: expected an ISO 4217 code"),
    (lambda: Pricing(currency="eur"), "Write 'EUR' (upper case)"),
    (lambda: Pricing(currency=978), "currency=978 is invalid"),
    (lambda: Pricing.preset("aws"), "preset='aws' is invalid"),
    (lambda: worker_cost("aws", **W), "pricing='aws' is invalid: expected a packlab.Pricing"),
    (lambda: worker_cost(P, **{**W, "cores": -1}), "cores=-1 is invalid"),
    (lambda: worker_cost(P, **{**W, "memory": "lots"}), "memory='lots' is invalid"),
    (lambda: worker_cost(P, **{**W, "seconds": -5}), "seconds=-5 is invalid"),
    (lambda: worker_cost(P, **W, market="preemptible"), "market='preemptible' is invalid"),
    (lambda: worker_cost(P, **W, gpus=0.5), "gpus=0.5 is invalid"),
    # cost attribution
    (lambda: attribute(P, "w1", []), "held='w1' is invalid: expected a list of WorkerInterval"),
    (lambda: attribute(P, [{**HELD, "stop": -1}], []), "stop=-1 is invalid: expected a time no earlier"),
    (lambda: attribute(P, [{"worker": "w", "start": 0, "stop": 1}], []), "fields: 'cores' and 'memory'"),
    (lambda: attribute(P, [{**HELD, "gpu": 1}], []), "Remove 'gpu'"),
    (lambda: attribute(P, [HELD], [3]), "busy[0]=3 is invalid"),
    (lambda: attribute(None, [HELD], []), "pricing=None is invalid"),
    (lambda: JobInterval("j", "w", 0, 1, threads=0), "threads=0 is invalid"),
    (lambda: WorkerInterval("", 0, 1, cores=1, memory=0), "worker='' is invalid"),
    (lambda: WorkerInterval("w", NAN, 1, cores=1, memory=0), "start=nan is invalid"),
    (lambda: WorkerInterval("w", 0, 1, cores=1, memory=0, market="cheap"), "market='cheap' is invalid"),
    (lambda: WorkerInterval("w", 0, 1, cores=1, memory=0, billing=-2), "billing=-2 is invalid"),
    (lambda: attribute_service_units([HELD], []), "held[0].billing=None is invalid"),
    # SLURM service units
    (lambda: parse_tres("cpu4"), "tres='cpu4' is invalid"),
    (lambda: parse_tres(""), "tres='' is invalid"),
    (lambda: billing("cpu=4,mem=1G"), "expected a TRES string with a billing= value"),
    (lambda: billing("billing=x"), "billing='x' is invalid"),
    (lambda: service_units(-1, 60), "billing=-1 is invalid"),
    (lambda: service_units(1, "soon"), "elapsed='soon' is invalid"),
    (lambda: service_units(1, "1:99:00"), "elapsed='1:99:00' is invalid"),
    (lambda: su_cost(P, -3), "units=-3 is invalid"),
    # alert rules
    (lambda: Rule("r", "queue_lenght", "slope_above", 0), "metric='queue_lenght' is invalid"),
    (lambda: Rule("r", "utilisation", "above", 0.9), "condition='above' is invalid"),
    (lambda: Rule("r", "utilisation", "above_for", 0.9, window=-5), "window=-5 is invalid"),
    (lambda: Rule("r", "utilisation", "above_for", 0.9, window=0), "window=0 is invalid"),
    (lambda: Rule("r", "utilisation", "above_for", 0.9, cooldown="-1m"), "cooldown='-1m' is invalid"),
    (lambda: Rule("r", "utilisation", "above_for", 90), "threshold=90 is invalid: expected a fraction"),
    (lambda: Rule("r", "utilisation", "above_for", "0.9"), "threshold='0.9' is invalid"),
    (lambda: Rule("r", "utilisation", "above_for", 0.9, severity="urgent"), "severity='urgent' is invalid"),
    (lambda: Rule("r", "utilisation", "above_for", 0.9, min_samples=0), "min_samples=0 is invalid"),
    (lambda: Rule("", "utilisation", "above_for", 0.9), "name='' is invalid"),
    (lambda: evaluate("busy", {}, now=0), "rules='busy' is invalid"),
    (lambda: evaluate([OK_RULE, "x"], {}, now=0), "rules[1]='x' is invalid"),
    (lambda: evaluate([OK_RULE, OK_RULE], {}, now=0), "two rules are named 'busy'"),
    (lambda: evaluate([OK_RULE], [(0, 1)], now=0), "series=[(0, 1)] is invalid"),
    (lambda: evaluate([OK_RULE], {"queue_len": []}, now=0), "Did you mean 'queue_depth'?"),
    (lambda: evaluate([OK_RULE], {"utilisation": [(0, 1, 2)]}, now=0), "series['utilisation'][0]=(0, 1, 2)"),
    (lambda: evaluate([OK_RULE], {"utilisation": [(0, NAN)]}, now=0), "series['utilisation'][0][1]=nan"),
    (lambda: evaluate([OK_RULE], {}, now=NAN), "now=nan is invalid"),
    (lambda: evaluate([OK_RULE], {}, now=0, state="fresh"), "state='fresh' is invalid"),
    # series
    (lambda: RingBuffer(0), "capacity=0 is invalid"),
    (lambda: RingBuffer(2).append("now", 1), "t='now' is invalid"),
    (lambda: downsample([], now=0, how="median"), "how='median' is invalid"),
    (lambda: downsample([], now=0, tiers=[(60, 1)]), "expected a list of (max_age, resolution) pairs"),
    (lambda: downsample([], now=0, tiers=[(60, 60), (INF, 90)]), "each a multiple of the one before"),
    (lambda: downsample([], now=0, tiers=[(60, 0), (INF, 60)]), "tiers[0][1]=0 is invalid"),
    (lambda: downsample("rows", now=0), "rows='rows' is invalid"),
    (lambda: select([], since=5, until=1), "since=5 is invalid: expected a time no later than until=1"),
    (lambda: percentile([], 50), "values=[] is invalid"),
    (lambda: percentile([1], 101), "q=101 is invalid"),
    (lambda: percentile([1, "2"], 50), "values[1]='2' is invalid"),
    (lambda: slope([(0, 1)]), "expected at least two rows"),
    (lambda: slope([(5, 1), (5, 2)]), "expected rows at two or more distinct times"),
    (lambda: describe_change("", 1, 2), "label='' is invalid"),
    (lambda: describe_trend("Cost", "up", 1), "current='up' is invalid"),
    (lambda: max_rows(-1), "span=-1 is invalid"),
    # advisor
    (lambda: WorkerUsage(**{**WU, "cores": 0}), "cores=0 is invalid"),
    (lambda: WorkerUsage(**{**WU, "memory": "lots"}), "memory='lots' is invalid"),
    (lambda: WorkerUsage(**WU, gpu_utilisation=1.5), "gpu_utilisation=1.5 is invalid"),
    (lambda: WorkerUsage(**WU, idle_seconds=-1), "idle_seconds=-1 is invalid"),
    (lambda: WorkerUsage(**WU, memory_peak=NAN), "memory_peak=nan is invalid"),
    (lambda: WorkerUsage(**WU, gpus=1.0), "gpus=1.0 is invalid"),
    (lambda: SlurmJobUsage("1", "COMPLETED", 10), "state='COMPLETED' is invalid"),
    (lambda: SlurmJobUsage("1", "PENDING", 10, workers="w1"), "workers='w1' is invalid"),
    (lambda: RunSummary(wall_seconds=-1), "wall_seconds=-1 is invalid"),
    (lambda: RunSummary(wall_seconds=1, workers=[{"name": "w"}]), "workers[0]={'name': 'w'} is invalid"),
    (lambda: RunSummary(wall_seconds=1, queue_running="yes"), "queue_running='yes' is invalid"),
    (lambda: RunSummary(wall_seconds=1, retry_delays=5), "retry_delays=5 is invalid"),
    (lambda: findings("run"), "summary='run' is invalid"),
    (lambda: findings(RunSummary(wall_seconds=1), {"cpu_efficiency": 0.5}), "thresholds={'cpu_efficiency'"),
    (lambda: Thresholds.from_config(cpu_efficency=0.5), "Did you mean 'cpu_efficiency'?"),
    (lambda: Thresholds.from_config(memory_low=2), "memory_low=2 is invalid"),
    (lambda: Finding("x", "high", {}, "print()"), "severity='high' is invalid"),
    (lambda: Finding("x", "info", {"n": "many"}, "print()"), "evidence['n']='many' is invalid"),
    (lambda: Finding("x", "info", {}, ""), "fix='' is invalid"),
    (lambda: right_size("w1"), "worker='w1' is invalid"),
]


@pytest.mark.parametrize("call, says", CASES, ids=[s for _, s in CASES])
def test_bad_input_is_refused_naming_field_and_value(call, says):
    with pytest.raises(PacklabError) as err:
        call()
    assert isinstance(err.value, ValueError)
    assert says in str(err.value), str(err.value)
    assert "is invalid" in str(err.value) or "two rules" in str(err.value)


def test_there_are_enough_cases():
    assert len(CASES) >= 25
