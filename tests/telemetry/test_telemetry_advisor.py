"""Every advisor rule on a summary that shows its pattern and on one that does not, and
seff-style right-sizing against hand calculations."""

from __future__ import annotations

import dask
import pytest

import packlab
from packlab.errors import ConfigError
from packlab.profiles import Profile
from packlab.telemetry.advisor import RULES, Finding, findings
from packlab.telemetry.sizing import right_size
from packlab.telemetry.usage import RunSummary, SlurmJobUsage, Thresholds, WorkerUsage

GIB = 2**30
HOUR = 3600.0


def worker(name="w1", **kw):
    """A worker that is well used: 2 cores busy 80 %, 3 of 4 GiB at peak, no spill, busy now."""
    base = dict(cores=2, memory=4 * GIB, held_seconds=HOUR, cpu_seconds=0.8 * 2 * HOUR,
                memory_peak=3 * GIB)
    return WorkerUsage(name, **{**base, **kw})


def healthy(**kw):
    """A run that none of the rules objects to."""
    base = dict(wall_seconds=HOUR, workers=(worker("w1"), worker("w2")), tasks=1000, task_seconds=5000,
                longest_task="t-7", longest_task_seconds=30, submissions=100, retries=2,
                retry_delays=(2.0, 4.0), queue_running=True, alert_sinks=1, queue_depth=3)
    return RunSummary(**{**base, **kw})


def names(summary, **th):
    return [f.name for f in findings(summary, Thresholds.from_config(**th) if th else None)]


def the(summary, name):
    (f,) = [f for f in findings(summary) if f.name == name]
    return f


def test_a_healthy_run_has_no_findings():
    assert findings(healthy()) == []


# each rule: (the summary that shows it, the finding's name, an evidence key -> value)
POSITIVE = {
    "idle-cluster": (healthy(workers=(worker("w1", idle_seconds=300), worker("w2", idle_seconds=180))),
                     {"workers": 2, "idle_seconds": 180}),
    "retry-storm": (healthy(retries=40), {"retries": 40, "retry_rate": 0.4}),
    "memory-hog": (healthy(workers=(worker("w1", memory=16 * GIB, memory_peak=3 * GIB), worker("w2"))),
                   {"workers": 1, "memory_gib": 16, "memory_peak_gib": 3}),
    "memory-spill": (healthy(workers=(worker("w1", memory_peak=int(3.8 * GIB), spilled_bytes=2 * GIB),)),
                     {"workers": 1, "spilled_gib": 2}),
    "single-giant-job": (healthy(longest_task_seconds=4000), {"share": 0.8, "longest_task_seconds": 4000}),
    "unmonitored-pipeline": (healthy(alert_sinks=0), {"alert_sinks": 0}),
    "too-small-for-a-cluster": (healthy(tasks=10, task_seconds=3, longest_task_seconds=1),
                                {"task_seconds": 3, "workers": 2}),
    "low-cpu-efficiency": (healthy(workers=(worker("w1", cpu_seconds=0.5 * HOUR), worker("w2"))),
                           {"workers": 1, "cpu_efficiency": 0.25}),
    "idle-gpus": (healthy(workers=(worker("w1", gpus=1, gpu_utilisation=0.05), worker("w2"))),
                  {"workers": 1, "gpus": 1, "gpu_utilisation": 0.05}),
    "slurm-held-idle": (healthy(workers=(worker("w1", idle_seconds=600), worker("w2")), slurm_jobs=(
        SlurmJobUsage("101", "RUNNING", 900, ("w1",)), SlurmJobUsage("102", "RUNNING", 900, ("w2",)))),
        {"jobs": 1, "running_jobs": 2}),
    "slurm-pending-deep-queue": (healthy(queue_depth=500, slurm_jobs=(SlurmJobUsage("103", "PENDING", 900),)),
                                 {"pending_jobs": 1, "queue_depth": 500, "threads": 4}),
}

NEGATIVE = {
    # held idle, but not for two minutes yet; or one worker still busy
    "idle-cluster": [healthy(workers=(worker("w1", idle_seconds=100), worker("w2", idle_seconds=100))),
                     healthy(workers=(worker("w1", idle_seconds=900), worker("w2")))],
    # a retry rate at the threshold; two fast retries are not a storm
    "retry-storm": [healthy(retries=20), healthy(retries=2, retry_delays=(0.1, 0.2))],
    # peak at half the limit is not a hog; spilling far below the limit is not "near it"
    "memory-hog": [healthy(workers=(worker("w1", memory=6 * GIB, memory_peak=3 * GIB),))],
    "memory-spill": [healthy(workers=(worker("w1", memory_peak=2 * GIB, spilled_bytes=GIB),))],
    # the longest task is 30 s of 5000; a single task alone is not "one of many"
    "single-giant-job": [healthy(), healthy(tasks=1, task_seconds=5000, longest_task_seconds=5000,
                                            workers=(worker("w1", cores=1),))],
    # no queue running; a queue with a sink
    "unmonitored-pipeline": [healthy(queue_running=False, alert_sinks=0), healthy()],
    # 3 s of work on one worker is fine locally; 30 s on two is worth a cluster
    "too-small-for-a-cluster": [healthy(tasks=10, task_seconds=3, workers=(worker("w1"),)),
                                healthy(tasks=10, task_seconds=30)],
    "low-cpu-efficiency": [healthy(workers=(worker("w1", cpu_seconds=0.66 * 2 * HOUR),))],
    # GPUs used 40 %; GPUs not measured
    "idle-gpus": [healthy(workers=(worker("w1", gpus=1, gpu_utilisation=0.4),)),
                  healthy(workers=(worker("w1", gpus=1),))],
    # the SLURM job's worker is busy
    "slurm-held-idle": [healthy(slurm_jobs=(SlurmJobUsage("101", "RUNNING", 900, ("w1",)),))],
    # pending long but the queue is shallow (3 < 10 x 4 threads); deep but pending briefly
    "slurm-pending-deep-queue": [healthy(queue_depth=3, slurm_jobs=(SlurmJobUsage("103", "PENDING", 900),)),
                                 healthy(queue_depth=500, slurm_jobs=(SlurmJobUsage("103", "PENDING", 60),))],
}


@pytest.mark.parametrize("name", sorted(POSITIVE))
def test_each_rule_names_its_pattern_with_evidence_and_a_fix(name):
    summary, evidence = POSITIVE[name]
    f = the(summary, name)
    for key, value in evidence.items():
        assert f.evidence[key] == pytest.approx(value), (key, f.evidence)
    assert f.fix and f.message
    assert all(isinstance(v, float) for v in f.evidence.values())


@pytest.mark.parametrize("name", sorted(NEGATIVE))
def test_each_rule_stays_quiet_on_the_opposite(name):
    for summary in NEGATIVE[name]:
        assert name not in names(summary)


def test_every_rule_has_a_positive_and_a_negative_case():
    produced = {f.name for s, _ in POSITIVE.values() for f in findings(s)}
    assert set(POSITIVE) == set(NEGATIVE) and set(POSITIVE) <= produced
    assert len(RULES) == 10  # memory-hog and memory-spill come from one rule


def test_retries_without_backoff_are_a_critical_storm_even_at_a_low_rate():
    f = the(healthy(retries=3, retry_delays=(0.0, 0.1, 0.2)), "retry-storm")
    assert f.severity == "critical" and f.evidence["retries_without_backoff"] == 3
    assert "backoff=" in f.fix


def test_findings_come_most_severe_first():
    s = healthy(alert_sinks=0, retries=3, retry_delays=(0, 0, 0), tasks=10, task_seconds=3)
    sev = [f.severity for f in findings(s)]
    assert sev == sorted(sev, key=["critical", "warning", "info"].index) and sev[0] == "critical"


def test_thresholds_come_from_the_settings_and_can_be_overridden():
    s = healthy(workers=(worker("w1", cpu_seconds=0.6 * 2 * HOUR),))  # 60 % efficient
    assert "low-cpu-efficiency" in names(s)
    assert "low-cpu-efficiency" not in names(s, cpu_efficiency=0.5)
    with dask.config.set({"packlab.telemetry.advisor.cpu-efficiency": 0.5}):
        assert "low-cpu-efficiency" not in names(s)
    with dask.config.set({"packlab.telemetry.advisor.cpu-efficiency": 1.5}):
        with pytest.raises(ConfigError) as err:
            findings(s)
    assert "packlab.telemetry.advisor.cpu-efficiency=1.5 is invalid" in str(err.value)


# -- right-sizing ----------------------------------------------------------------------
def test_right_size_like_seff_by_hand():
    # 8 cores, 32 GiB, held 2 h; 3.2 core-hours of CPU; peak 5 GiB
    w = WorkerUsage("w", cores=8, memory=32 * GIB, held_seconds=2 * HOUR, cpu_seconds=3.2 * HOUR,
                    memory_peak=5 * GIB)
    r = right_size(w)
    assert r.cpu_efficiency == pytest.approx(3.2 / 16)      # 3.2 core-h / (8 cores x 2 h) = 20 %
    assert r.memory_efficiency == pytest.approx(5 / 32)     # 5 of 32 GiB = 15.6 %
    assert r.cores == 2                                     # 1.6 cores in use x 1.2 = 1.92 -> 2
    assert r.memory == 6 * GIB                              # 5 GiB x 1.2 = 6.0 GiB
    assert r.walltime == 9000                               # 2 h x 1.2 = 2 h 24 min -> 2 h 30 min
    assert r.profile == "data-transform"                    # the smallest with 2 cores and 6 GiB
    assert r.launch == 'packlab.launch(profile="data-transform", walltime="02:30:00")'


def test_right_size_asks_for_more_when_it_spilled_and_drops_idle_gpus():
    w = WorkerUsage("w", cores=4, memory=4 * GIB, held_seconds=HOUR, cpu_seconds=3.8 * HOUR,
                    memory_peak=int(3.9 * GIB), spilled_bytes=GIB, gpus=1, gpu_utilisation=0.02)
    r = right_size(w)
    # spilled at 97 % of 4 GiB: twice the limit, 8 GiB; 3.8 cores x 1.2 = 4.56, capped at the 4 it had
    assert (r.memory, r.cores, r.gpus) == (8 * GIB, 4, 0)
    assert r.profile is None  # no profile without a GPU has 4 cores and 8 GiB
    assert r.launch == 'packlab.launch(cores=4, memory="8GiB", gpus=0, walltime="01:15:00")'
    assert right_size(w, profiles={"big": Profile("big", cores=8, memory=64 * GIB)}).profile == "big"


def test_right_size_keeps_busy_gpus_and_picks_a_gpu_profile():
    w = WorkerUsage("w", cores=4, memory=16 * GIB, held_seconds=HOUR, cpu_seconds=2 * HOUR,
                    memory_peak=2 * GIB, gpus=1, gpu_utilisation=0.8)
    r = right_size(w)
    assert r.gpus == 1 and r.profile == "rendering"  # 4 cores, 4 GiB, 1 GPU: smaller than ml-training


def test_a_right_sized_fix_names_a_profile_that_exists():
    # the launch line of a memory hog names one of packlab.PROFILES
    f = the(POSITIVE["memory-hog"][0], "memory-hog")
    assert f.fix.startswith("packlab.launch(profile=")
    profile = f.fix.split('"')[1]
    assert profile in packlab.PROFILES


def test_finding_is_exported_and_checks_its_fields():
    f = packlab.Finding("x", "info", {"n": 1}, "print(1)")
    assert isinstance(f, Finding) and f.evidence == {"n": 1.0}


def test_right_size_keeps_the_memory_asked_when_no_peak_was_measured():
    w = WorkerUsage("w", cores=2, memory=4 * GIB, held_seconds=HOUR, cpu_seconds=1.5 * HOUR)
    assert right_size(w).memory == 4 * GIB and "memory-hog" not in names(healthy(workers=(w,)))


def test_a_broken_profile_in_the_config_does_not_stop_right_sizing():
    with dask.config.set({"packlab.profiles.broken": {"cores": 0, "memory": "1GiB"}}):
        assert right_size(worker(memory=16 * GIB, memory_peak=GIB)).profile == "general-batch"
