"""SLURM service units against the test SLURM's own billing (scripts/slurm-up sets
TRESBillingWeights: batch 1 per CPU + 0.5 per GB, spot half that), checked by hand."""

from __future__ import annotations

import math
import sqlite3
import time
import uuid
import warnings

import dask
import pytest
from slurm_jobs import job_info

import packlab
from packlab.telemetry.pricing import Pricing
from packlab.telemetry.summary import run_summary

pytestmark = pytest.mark.slurm
WEIGHTS = {"batch": (1.0, 0.5), "spot": (0.5, 0.25)}  # (per CPU, per GB): scripts/slurm-up


def seconds(runtime: str) -> float:
    h, m, s = (int(x) for x in runtime.split("-")[-1].split(":"))
    return 3600 * h + 60 * m + s + (86400 * int(runtime.split("-")[0]) if "-" in runtime else 0)


@pytest.mark.parametrize("spot", [False, True])
def test_service_units_are_sreports_billing_times_elapsed(tmp_path, spot):
    store = str(tmp_path / "t.db")
    with dask.config.set({"packlab.telemetry.interval": "0.2s", "packlab.telemetry.flush-interval": "0.2s"}):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", packlab.PacklabWarning)
            pc = packlab.launch(backend="slurm", cores=2, memory="4GiB", workers=1, spot=spot, wait=120,
                                store=store, job_name=f"pl-su-{uuid.uuid4().hex[:6]}")
        with pc:
            ids = [job.job_id for job in pc.cluster.workers.values()]
            assert pc.client.submit(sum, [1, 2]).result() == 3
            time.sleep(2)
    partition = "spot" if spot else "batch"
    [jid] = ids
    info = job_info(jid)
    tres = dict(kv.split("=") for kv in info["TRES"].split(","))
    cpus, mem_gb = int(tres["cpu"]), float(tres["mem"].rstrip("G"))
    w_cpu, w_mem = WEIGHTS[partition]
    billing = math.floor(cpus * w_cpu + mem_gb * w_mem)  # by hand; SLURM truncates to a whole number
    assert (cpus, mem_gb, billing) == (2, 4.0, 2 if spot else 4) and int(tres["billing"]) == billing
    hand = billing * seconds(info["RunTime"]) / 3600
    con = sqlite3.connect(store)
    row = con.execute("SELECT partition, billing, elapsed, state FROM tel_slurm WHERE job_id=?",
                      (jid,)).fetchone()
    assert row[0] == partition and row[1] == billing and row[3] not in ("RUNNING", "PENDING")
    snap = packlab.monitor(store, pricing=Pricing(su_price=0.5)).snapshot()
    assert math.isclose(snap.service_units, hand, rel_tol=1e-6) and snap.service_units > 0
    assert math.isclose(snap.service_units_cost, hand * 0.5, rel_tol=1e-6)
    market = con.execute("SELECT market FROM tel_workers").fetchone()[0]
    assert market == ("spot" if spot else "on-demand")


def test_a_worker_job_pending_while_the_queue_is_deep_is_found(tmp_path):
    settings = {"packlab.telemetry.interval": "0.2s", "packlab.telemetry.flush-interval": "0.2s",
                "packlab.telemetry.advisor.pending-after": "1s"}
    with dask.config.set(settings), warnings.catch_warnings():
        warnings.simplefilter("ignore", packlab.PacklabWarning)
        # --begin holds the worker job pending for 10 minutes: it never starts here
        with packlab.launch(backend="slurm", cores=1, memory="1GiB", workers=1,
                            job_extra_directives=["--begin=now+600"],
                            job_name=f"pl-pend-{uuid.uuid4().hex[:6]}") as pc:
            with packlab.JobQueue(pc, store=str(tmp_path / "q.db")) as q:
                q.map(abs, range(-20, 0))
                t0 = time.monotonic()  # until SLURM's poll and the depth sample both landed
                while True:
                    time.sleep(0.5)
                    found = {f.name: f for f in packlab.advise(pc)}
                    if "slurm-pending-deep-queue" in found or time.monotonic() - t0 > 30:
                        break
                [jid] = [job.job_id for job in pc.cluster.workers.values()]
                assert job_info(jid)["JobState"] == "PENDING"
                summary = run_summary(packlab.monitor(pc))  # what the advisor read, should it miss
    assert "slurm-pending-deep-queue" in found, (sorted(found), summary)
    f = found["slurm-pending-deep-queue"]
    assert f.evidence["pending_jobs"] == 1 and f.evidence["pending_seconds"] >= 1
    assert f.evidence["queue_depth"] >= 10


def test_a_worker_job_held_while_its_dask_worker_idles_is_found():
    settings = {"packlab.telemetry.interval": "0.2s", "packlab.telemetry.flush-interval": "0.2s",
                "packlab.telemetry.advisor.idle-after": "1s"}
    with dask.config.set(settings), warnings.catch_warnings():
        warnings.simplefilter("ignore", packlab.PacklabWarning)
        with packlab.launch(backend="slurm", cores=1, memory="1GiB", workers=1, wait=120,
                            job_name=f"pl-idle-{uuid.uuid4().hex[:6]}") as pc:
            assert pc.client.submit(sum, [1, 2]).result() == 3
            time.sleep(1.5)
            found = {f.name: f for f in packlab.advise(pc)}
    f = found["slurm-held-idle"]
    assert f.evidence["jobs"] == 1 and f.evidence["running_jobs"] == 1 and f.evidence["seconds"] >= 1
    assert f.fix == "cluster.adapt(minimum=0, maximum=1)" and "idle-cluster" in found
