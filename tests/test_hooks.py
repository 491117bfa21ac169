"""Hooks: a package takes part in launch() and in a queue's opening without the clusters or
the queue importing it (packlab.hooks). Telemetry is the built-in user of both; these
tests register hooks of their own on a real local cluster and queue."""

from __future__ import annotations

import logging

import pytest

import packlab
from packlab import hooks
from packlab.errors import PacklabError


class Recorder:
    def __init__(self):
        self.calls: list[tuple] = []

    def check(self, options):
        self.calls.append(("check", options.get("store")))
        if options.get("store") == "refused-by-the-hook.db":
            raise PacklabError("store='refused-by-the-hook.db' is invalid: the test hook refuses it.",
                               field="store", value=options["store"])

    def launched(self, pc, options):
        self.calls.append(("launched", pc.name))
        pc.attach(self)

    def close(self):
        self.calls.append(("close",))

    def after_close(self):
        self.calls.append(("after_close",))

    def opened(self, queue, cluster_or_client):
        self.calls.append(("opened", queue.store))
        return self


class Broken:
    def opened(self, queue, cluster_or_client):
        raise RuntimeError("this queue hook is broken")


@pytest.fixture
def recorder():
    r = Recorder()
    hooks.CLUSTER_HOOKS.register("test-recorder", r)
    hooks.QUEUE_HOOKS.register("test-recorder", r)
    hooks.QUEUE_HOOKS.register("test-broken", Broken())
    try:
        yield r
    finally:
        hooks.CLUSTER_HOOKS.unregister("test-recorder")
        hooks.QUEUE_HOOKS.unregister("test-recorder")
        hooks.QUEUE_HOOKS.unregister("test-broken")


def test_telemetry_is_installed_through_the_built_in_hooks():
    assert "telemetry" in hooks.CLUSTER_HOOKS and "telemetry" in hooks.QUEUE_HOOKS


def test_a_cluster_hook_checks_first_then_sees_the_cluster_launch_and_close(recorder, tmp_path, caplog):
    with pytest.raises(PacklabError, match="the test hook refuses it"):
        packlab.launch(workers=0, store="refused-by-the-hook.db", telemetry=False)
    assert recorder.calls == [("check", "refused-by-the-hook.db")]  # nothing was started
    recorder.calls.clear()
    store = str(tmp_path / "q.db")
    with caplog.at_level(logging.WARNING, logger="packlab"):
        with packlab.launch(workers=1, cores=1, memory="1GiB", wait=True) as pc:
            with packlab.JobQueue(pc, store=store) as q:
                assert q.submit(pow, 2, 5).result(timeout=60) == 32
            assert pc.telemetry is not None  # the built-in hook ran beside ours
    assert [c[0] for c in recorder.calls] == ["check", "launched", "opened", "close", "close",
                                              "after_close"]
    assert recorder.calls[2] == ("opened", store)
    assert "the queue hook 'test-broken' failed; the queue runs without it" in caplog.text
