"""Bad input to the job queue and its CLI: each case raises the documented exception
(or exits 2 with one readable line), names the field (or the option as typed), the
value given and the fix, and leaves the store byte for byte as it was."""

from __future__ import annotations

import hashlib
import os
import sys

import cloudpickle
import dask
import pytest
from click.testing import CliRunner
from support import small_cluster

from packlab.cli import main as cli
from packlab.errors import PacklabError
from packlab.queue import CircuitBreaker, FairShare, JobQueue, Priority, Retry, RetryBudget, get_policy

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A live queue (no heartbeat during the module: nothing writes unless asked) with
    one done job, and a file that is not a store."""
    d = tmp_path_factory.mktemp("bad")
    store = str(d / "q.db")
    garbage = str(d / "garbage.db")
    with open(garbage, "wb") as f:
        f.write(b"not a database, just bytes" * 10)
    with dask.config.set({"packlab.queue.lease-timeout": "1h"}), small_cluster() as pc:
        q = JobQueue(pc, store=store)
        done = q.submit(abs, -1)
        done.result(timeout=60)
        q.flush()
        try:
            yield {"pc": pc, "q": q, "done": done, "store": store, "dir": d, "garbage": garbage}
        finally:
            q.close()


def snapshot(w) -> dict[str, str]:
    """The bytes of every file of the test folder: the store, its write-ahead log, the
    others. Not ``-shm``: SQLite's shared-memory index, which every reader writes to."""
    out = {}
    for name in sorted(os.listdir(w["dir"])):
        if name.endswith("-shm"):
            continue
        with open(os.path.join(w["dir"], name), "rb") as f:
            out[name] = hashlib.sha256(f.read()).hexdigest()
    return out


def _new(w):
    return str(w["dir"] / "never-made.db")


# (id, call(w), exception, fragments the message must contain: field, value, fix)
API = [
    (
        "queue-max-in-flight-0",
        lambda w: JobQueue(w["pc"], store=_new(w), max_in_flight=0),
        PacklabError,
        ["max_in_flight=0", "at least 1"],
    ),
    (
        "queue-max-in-flight-str",
        lambda w: JobQueue(w["pc"], store=_new(w), max_in_flight="8"),
        PacklabError,
        ["max_in_flight='8'", "whole number"],
    ),
    (
        "queue-policy",
        lambda w: JobQueue(w["pc"], store=_new(w), policy="lifo"),
        PacklabError,
        ["policy='lifo'", "choose one of", "fair-share"],
    ),
    (
        "queue-retry",
        lambda w: JobQueue(w["pc"], store=_new(w), retry="often"),
        PacklabError,
        ["retry='often'", "a packlab.Retry, a number of attempts"],
    ),
    (
        "queue-retry-budget",
        lambda w: JobQueue(w["pc"], store=_new(w), retry_budget="lots"),
        PacklabError,
        ["retry_budget='lots'", "such as 0.2"],
    ),
    (
        "queue-breaker",
        lambda w: JobQueue(w["pc"], store=_new(w), breaker=5),
        PacklabError,
        ["breaker=5", "CircuitBreaker(threshold=, cooldown=)"],
    ),
    (
        "queue-take-over",
        lambda w: JobQueue(w["pc"], store=_new(w), take_over="yes"),
        PacklabError,
        ["take_over='yes'", "True or False"],
    ),
    (
        "queue-store-type",
        lambda w: JobQueue(w["pc"], store=42),
        PacklabError,
        ["store=42", "a file path or a sqlite:///path URL"],
    ),
    (
        "queue-store-url",
        lambda w: JobQueue(w["pc"], store="postgresql://h/db"),
        PacklabError,
        ["store='postgresql://h/db'", "give a file path or a sqlite:///path URL"],
    ),
    (
        "queue-store-garbage",
        lambda w: JobQueue(w["pc"], store=w["garbage"]),
        PacklabError,
        ["garbage.db", "is not an SQLite database", "Pass store= a new file name"],
    ),
    (
        "queue-cluster",
        lambda w: JobQueue("tcp://nowhere:8786", store=_new(w)),
        PacklabError,
        ["cluster_or_client='tcp://nowhere:8786'", "a distributed.Client"],
    ),
    ("submit-fn", lambda w: w["q"].submit(42), PacklabError, ["fn=42", "a function (callable)"]),
    (
        "submit-priority",
        lambda w: w["q"].submit(abs, 1, priority="urgent"),
        PacklabError,
        ["priority='urgent'", "'high', 'normal', 'low'"],
    ),
    ("submit-owner", lambda w: w["q"].submit(abs, 1, owner=7), PacklabError, ["owner=7", "a string"]),
    ("submit-key", lambda w: w["q"].submit(abs, 1, key=3), PacklabError, ["key=3", "idempotency key"]),
    (
        "submit-timeout-str",
        lambda w: w["q"].submit(abs, 1, timeout="soon"),
        PacklabError,
        ["timeout='soon'", 'such as "60s"'],
    ),
    (
        "submit-timeout-negative",
        lambda w: w["q"].submit(abs, 1, timeout=-1),
        PacklabError,
        ["timeout=-1", "a positive duration"],
    ),
    (
        "submit-timeout-inf",
        lambda w: w["q"].submit(abs, 1, timeout=float("inf")),
        PacklabError,
        ["timeout=inf", "expected a duration"],
    ),
    (
        "submit-deadline-str",
        lambda w: w["q"].submit(abs, 1, deadline="yesterday"),
        PacklabError,
        ["deadline='yesterday'", 'such as "60s"'],
    ),
    (
        "submit-deadline-past",
        lambda w: w["q"].submit(abs, 1, deadline=-5),
        PacklabError,
        ["deadline=-5", "a time in the future", "'10m'"],
    ),
    (
        "submit-resources-negative",
        lambda w: w["q"].submit(abs, 1, resources={"GPU": -1}),
        PacklabError,
        ["resources={'GPU': -1}", '{"GPU": 1}'],
    ),
    (
        "submit-resources-list",
        lambda w: w["q"].submit(abs, 1, resources=["GPU"]),
        PacklabError,
        ["resources=['GPU']", "a dict of positive amounts"],
    ),
    (
        "submit-retry",
        lambda w: w["q"].submit(abs, 1, retry=2.5),
        PacklabError,
        ["retry=2.5", "a number of attempts"],
    ),
    (
        "map-keys",
        lambda w: w["q"].map(abs, [1, 2], keys=["a"]),
        PacklabError,
        ["keys has 1 entries for 2 items", "one key per item"],
    ),
    ("retry-attempts", lambda w: Retry(attempts=0), PacklabError, ["attempts=0", "at least 1"]),
    (
        "retry-backoff",
        lambda w: Retry(backoff="fibonacci"),
        PacklabError,
        ["backoff='fibonacci'", "'exponential', 'linear', 'constant'"],
    ),
    ("retry-base", lambda w: Retry(base="fast"), PacklabError, ["base='fast'", 'such as "60s"']),
    ("retry-jitter", lambda w: Retry(jitter="no"), PacklabError, ["jitter='no'", "True or False"]),
    (
        "retry-on",
        lambda w: Retry(on="ValueError"),
        PacklabError,
        ["on='ValueError'", "exception types such as"],
    ),
    (
        "retry-cap",
        lambda w: Retry(base="10s", cap="1s"),
        PacklabError,
        ["cap=1.0", "base=10.0", "at least the base"],
    ),
    (
        "fairshare-weight",
        lambda w: FairShare(weights={"ann": -1}),
        PacklabError,
        ["weights['ann']=-1", "a positive number", "weights={'ann': 2}"],
    ),
    (
        "fairshare-weights-list",
        lambda w: FairShare(weights=["ann"]),
        PacklabError,
        ["weights=['ann']", 'e.g. {"alice": 2}'],
    ),
    (
        "fairshare-half-life",
        lambda w: FairShare(half_life="never"),
        PacklabError,
        ["half_life='never'", 'such as "60s"'],
    ),
    (
        "priority-aging",
        lambda w: Priority(aging="forever"),
        PacklabError,
        ["aging='forever'", 'such as "60s"'],
    ),
    ("policy-name", lambda w: get_policy("lifo"), PacklabError, ["policy='lifo'", "choose one of"]),
    ("budget-ratio", lambda w: RetryBudget(ratio="lots"), PacklabError, ["ratio='lots'", "e.g. 0.2"]),
    ("breaker-threshold", lambda w: CircuitBreaker(threshold=0), PacklabError, ["threshold=0", "at least 1"]),
    (
        "breaker-cooldown",
        lambda w: CircuitBreaker(cooldown="soon"),
        PacklabError,
        ["cooldown='soon'", 'such as "60s"'],
    ),
    (
        "wait-timeout",
        lambda w: w["q"].wait(timeout="soon"),
        PacklabError,
        ["timeout='soon'", 'such as "60s"'],
    ),
    (
        "wait-jobs-str",
        lambda w: w["q"].wait("abc"),
        PacklabError,
        ["jobs='abc'", "a list of Jobs or job ids"],
    ),
    (
        "result-timeout",
        lambda w: w["done"].result(timeout="soon"),
        PacklabError,
        ["timeout='soon'", 'such as "60s"'],
    ),
    (
        "result-timeout-nan",
        lambda w: w["done"].result(timeout=float("nan")),
        PacklabError,
        ["timeout=nan", "expected a duration"],
    ),
    (
        "get-type",
        lambda w: w["q"].get(42),
        PacklabError,
        ["job_id=42", "a job id string", "packlab queue ls"],
    ),
    (
        "get-unknown",
        lambda w: w["q"].get("nope"),
        PacklabError,
        ["job id 'nope' does not exist", "packlab queue ls"],
    ),
    (
        "requeue-unknown",
        lambda w: w["q"].requeue("nope"),
        PacklabError,
        ["job id 'nope' does not exist", "q.jobs()"],
    ),
    (
        "requeue-done",
        lambda w: w["q"].requeue(w["done"].id),
        PacklabError,
        ["is done", "only dead, failed or cancelled jobs can be requeued"],
    ),
    ("cancel-type", lambda w: w["q"].cancel(123), PacklabError, ["job_id=123", "a job id string"]),
    (
        "jobs-status",
        lambda w: w["q"].jobs(status="bogus"),
        PacklabError,
        ["status='bogus'", "['queued', 'running'", "status=None"],
    ),
    (
        "subscribe-kinds",
        lambda w: w["q"].subscribe(print, kinds=["finished"]),
        PacklabError,
        ["kinds=['finished']", "event kinds among", "kinds=None"],
    ),
    (
        "subscribe-callback",
        lambda w: w["q"].subscribe("print"),
        PacklabError,
        ["callback='print'", "a function taking one packlab.queue.Event"],
    ),
]


@pytest.mark.parametrize("case", API, ids=[c[0] for c in API])
def test_api_bad_input(world, case):
    _, call, exc, fragments = case
    before = snapshot(world)
    with pytest.raises(exc) as err:
        call(world)
    assert isinstance(err.value, ValueError)  # bad input: a ValueError, not a runtime state
    msg = str(err.value)
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in {msg!r}"
    assert snapshot(world) == before  # nothing written, and no new store left behind


# (id, args (with {store} and {garbage} filled in), fragments of the one-line error)
CLI = [
    ("ls-limit-0", ["ls", "--limit", "0", "--store", "{store}"], ["--limit=0", "at least 1"]),
    ("ls-limit-text", ["ls", "--limit", "many", "--store", "{store}"], ["'--limit'", "'many'", "integer"]),
    ("ls-status", ["ls", "--status", "bogus", "--store", "{store}"], ["'--status'", "'bogus'", "'queued'"]),
    (
        "stats-missing-store",
        ["stats", "--store", "{dir}/typo.db"],
        ["--store='", "typo.db", "no queue store at", "Check the path (--store)"],
    ),
    (
        "ls-garbage",
        ["ls", "--store", "{garbage}"],
        ["--store='", "is not an SQLite database", "left it unchanged"],
    ),
    (
        "requeue-unknown",
        ["requeue", "nope", "--store", "{store}"],
        ["JOB_ID='nope' does not exist", "packlab queue ls"],
    ),
    (
        "requeue-done",
        ["requeue", "{done}", "--store", "{store}"],
        ["is done", "only dead, failed or cancelled jobs can be requeued"],
    ),
    ("cancel-done", ["cancel", "{done}", "--store", "{store}"], ["is done, already final", "only queued"]),
    ("cancel-missing-id", ["cancel", "--store", "{store}"], ["Missing argument 'JOB_ID'"]),
    (
        "requeue-missing-store",
        ["requeue", "x", "--store", "{dir}/typo.db"],
        ["--store='", "no queue store at"],
    ),
]


@pytest.mark.parametrize("case", CLI, ids=[c[0] for c in CLI])
def test_cli_bad_input(world, case):
    _, args, fragments = case
    fill = {
        "store": world["store"],
        "garbage": world["garbage"],
        "dir": str(world["dir"]),
        "done": world["done"].id,
    }
    args = [a.format(**fill) for a in args]
    before = snapshot(world)
    r = CliRunner().invoke(cli, ["queue", *args])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    for frag in fragments:
        assert frag.format(**fill) in r.output, f"{frag!r} not in {r.output!r}"
    assert snapshot(world) == before
