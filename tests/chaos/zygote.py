"""A pre-imported driver factory for the driver-kill trials: one process imports packlab
and Dask once (about 1-2 s), then forks one driver per trial, which the test kills.

    python tests/chaos/zygote.py CLUSTER_NAME

It reads one JSON command a line on stdin and answers ``<pid>`` for each child it forks:
``{"kind": "queue", "store", "log", "db", "n"}`` runs ``n`` keyed side-effect jobs
(``queue_driver.effect``) through a ``JobQueue``; ``{"kind": "pipeline", "ckpt", "log",
"db", "pause"}`` runs ``pipeline_driver``'s pipeline. Each child reaches the test's
long-lived cluster by name (``packlab.connect``), writes its progress to ``<log>.progress``
and exits when done. The fork happens while this process has one thread (checked), so a
child inherits no lock held by a thread that is gone.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import warnings


def preload() -> None:
    """Import once what every child uses (not at import: pytest's doctest collection
    imports this module too)."""
    global cloudpickle, packlab, pipeline_driver, queue_driver, JobQueue
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
    import cloudpickle
    import distributed  # noqa: F401  (imported here, once, for every child)
    import pipeline_driver
    import queue_driver

    import packlab
    import packlab.pipeline
    from packlab.queue import JobQueue

    # The workers need not import the test modules: the jobs travel by value.
    cloudpickle.register_pickle_by_value(queue_driver)
    cloudpickle.register_pickle_by_value(pipeline_driver)


def progress(cmd: dict, what: str) -> None:
    """Append ``what`` and when (``time.monotonic()``: one clock for every process here)."""
    with open(cmd["log"] + ".progress", "a") as f:
        f.write(f"{what} {time.monotonic():.4f}\n")


def child(name: str, cmd: dict) -> None:
    warnings.simplefilter("ignore")
    client = packlab.connect(name)
    progress(cmd, "connected")
    if cmd["kind"] == "queue":
        q = JobQueue(client, store=cmd["store"], max_in_flight=4)
        for i in range(cmd["n"]):
            q.submit(queue_driver.effect, f"k{i}", cmd["log"], cmd["db"], key=f"k{i}")
        q.flush()
        progress(cmd, "submitted")
        q.wait()
        q.close()
    else:
        pipe = pipeline_driver.build(cmd["ckpt"], cmd["log"], pause=cmd["pause"], db=cmd["db"])
        pipe.run(client)
    progress(cmd, "finished")
    client.close()


def main(name: str) -> None:
    preload()
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        while True:  # reap the children killed so far
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        assert threading.active_count() == 1, threading.enumerate()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                child(name, cmd)
            except BaseException as e:
                progress(cmd, f"error {type(e).__name__}: {e}")
                code = 1
            os._exit(code)
        print(pid, flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
