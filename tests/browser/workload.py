"""A workload for the browser tests: a 2-worker cluster writing telemetry to STORE while a
JobQueue runs jobs for about SECONDS seconds (two owners, two priority classes)."""

import sys
import time
import warnings

import packlab
from packlab.demo import batch as demo_batch
from packlab.queue import JobQueue

if __name__ == "__main__":
    store, seconds = sys.argv[1], float(sys.argv[2])
    warnings.simplefilter("ignore")
    with packlab.launch(workers=2, cores=1, memory="1GiB", wait=True, store=store) as pc:
        with JobQueue(pc, policy="fair-share", store=store, max_in_flight=2) as q:
            print("running", flush=True)
            end = time.time() + seconds
            while time.time() < end:
                q.map(demo_batch.work, [0.1] * 10, owner="alice", priority="normal")
                q.map(demo_batch.work, [0.1] * 4, owner="bob", priority="high")
                time.sleep(0.5)
            q.wait()
        pc.telemetry.flush()
    print("done", flush=True)
