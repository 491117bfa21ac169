"""Driver processes for the chaos tests, forked from one pre-imported zygote
(``zygote.py``) and killed with SIGKILL, and what each trial left behind.

One long-lived named cluster serves every trial: the driver reaches it with
``packlab.connect(name)``, so a trial costs a fork and a connection, not a cluster.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

ZYGOTE = os.path.join(os.path.dirname(__file__), "zygote.py")


class Zygote:
    """The zygote process (see ``zygote.py``); ``fork(cmd)`` starts one driver, returns its pid."""

    def __init__(self, cluster_name: str):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.proc = subprocess.Popen([sys.executable, ZYGOTE, cluster_name], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, start_new_session=True, env=env)
        line = self.proc.stdout.readline().strip()
        assert line == "ready", f"the zygote did not start: {line!r}"

    def fork(self, cmd: dict) -> int:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the zygote and any child still running
        self.proc.wait(timeout=30)


def dead(pid: int) -> bool:
    """Gone or a zombie: what the queue's lease sees as a dead driver."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def kill_at(pid: int, progress: str, due, t0: float) -> tuple[float, dict[str, float]]:
    """SIGKILL ``pid`` once ``due()`` says so, unless it finished first; wait until it is
    dead. Returns when it was killed (s after ``t0``, ``-1`` if it finished first) and the
    progress it wrote: step -> s after ``t0``."""
    killed = -1.0
    while not dead(pid) and "finished" not in steps(progress, t0):
        if due():
            os.kill(pid, signal.SIGKILL)
            killed = time.monotonic() - t0
            break
        time.sleep(0.002)
    deadline = time.monotonic() + 30  # killed, or finished and on its way out
    while not dead(pid):
        assert time.monotonic() < deadline, f"driver {pid} neither died nor exited"
        time.sleep(0.002)
    return killed, steps(progress, t0)


def kill_plan(rng, log: str, units: int, t0: float) -> tuple[str, object]:
    """When to kill a driver, drawn from ``rng``: a quarter of the time at a random moment
    of its first 0.5 s (connecting, opening its store, submitting), else a random 0-50 ms
    after a random number of its units' side effects happened (mid-run whatever the
    machine's load). Returns a description and ``due()``."""
    if rng.random() < 0.25:
        at = rng.uniform(0.0, 0.5)
        return f"at {at:.3f} s", lambda: time.monotonic() >= t0 + at
    k, extra, seen = rng.randrange(units), rng.uniform(0.0, 0.05), []

    def due() -> bool:
        if not seen and len(lines(log)) >= k:
            seen.append(time.monotonic())
        return bool(seen) and time.monotonic() >= seen[0] + extra

    return f"{extra * 1000:.0f} ms after {k} side effects", due


def steps(progress: str, t0: float) -> dict[str, float]:
    """What a driver wrote to its progress file: step -> s after ``t0``."""
    return {what: float(t) - t0 for what, _, t in (ln.rpartition(" ") for ln in lines(progress))}


def lines(path: str) -> list[str]:
    try:
        with open(path) as f:
            return f.read().split("\n")[:-1]
    except FileNotFoundError:
        return []


def runs(log: str) -> Counter:
    """How often each side effect's raw append happened (at least once per unit)."""
    return Counter(lines(log))


def effects_db(path: str) -> str:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE effects (key TEXT PRIMARY KEY)")
    con.commit()
    con.close()
    return path


def query(db: str, sql: str) -> list:
    if not os.path.exists(db):
        return []
    con = sqlite3.connect(db, timeout=30)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def record(store: str) -> dict[str, tuple[str, int]]:
    """key -> (status, number of ``done`` events) of every job of a queue store (none in a
    store whose driver was killed before it made its tables)."""
    if not query(store, "SELECT name FROM sqlite_master WHERE name = 'jobs'"):
        return {}
    rows = query(store, "SELECT j.key, j.status, (SELECT COUNT(*) FROM events e WHERE e.job_id = j.id "
                        "AND e.kind = 'done') FROM jobs j")
    return {k: (s, n) for k, s, n in rows}


@dataclass
class Tally:
    """What a series of kill trials did, for the printed figure."""

    trials: int = 0
    killed: int = 0  # drivers still running when the kill came (the others had finished)
    partial: int = 0  # killed with some of their work recorded done and some not
    jobs: int = 0
    done_before: int = 0
    redone: int = 0  # side effects' raw appends beyond one per unit: at-least-once rework
    lost: int = 0
    duplicated: int = 0
    kill_times: list = field(default_factory=list)

    def line(self, what: str) -> str:
        ks = sorted(self.kill_times)
        spread = f"{ks[0]:.2f}-{ks[-1]:.2f} s" if ks else "none"
        return (f"{what}: {self.trials} trials, {self.killed} drivers SIGKILLed mid-run (at {spread} "
                f"after the fork; {self.partial} with part of their work done), {self.jobs} jobs "
                f"completed, {self.done_before} done before the kill, "
                f"{self.redone} units redone after it, lost {self.lost}, duplicated {self.duplicated}")
