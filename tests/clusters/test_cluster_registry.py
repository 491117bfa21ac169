"""The owner-only registry of running clusters, and packlab.connect, against real clusters."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import warnings

import pytest

import packlab
from packlab.clusters import registry


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A throwaway home: the registry is ~/.packlab."""
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _launch(**kw) -> packlab.PackCluster:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", packlab.PacklabWarning)
        return packlab.launch(workers=1, cores=1, memory="1GiB", wait=True, **kw)


def test_entry_appears_with_owner_only_files_and_goes_on_close(home):
    with _launch(name="night-run") as pc:
        assert pc.name == "night-run"
        (e,) = registry.entries()
        assert (e.name, e.backend, e.scheduler, e.pid, e.host) == (
            "night-run", "local", pc.scheduler_address, os.getpid(), socket.gethostname())
        assert e.scheduler.startswith("tls://") and e.dashboard == pc.dashboard_link
        assert e.profile == pc.profile.name and e.store is None
        d = home / ".packlab" / "clusters"
        assert _mode(home / ".packlab") == 0o700 and _mode(d) == 0o700
        assert _mode(d / "night-run.json") == 0o600
        assert _mode(d / "night-run.tls") == 0o700
        for kind in ("ca", "cert", "key"):
            assert e.tls[kind] == str(d / "night-run.tls" / f"{kind}.pem")
            assert _mode(e.tls[kind]) == 0o600
        assert json.loads((d / "night-run.json").read_text())["scheduler"] == pc.scheduler_address
    assert registry.entries() == []
    assert sorted(os.listdir(home / ".packlab" / "clusters")) == []


def test_generated_name_is_readable_and_unique(home):
    with _launch() as a, _launch() as b:
        assert a.name != b.name
        assert all(registry.check_name(n) and n.count("-") >= 1 for n in (a.name, b.name))
        assert {e.name for e in registry.entries()} == {a.name, b.name}
        assert a.name in repr(a) and a.name in a._repr_html_()


def test_a_live_name_is_refused_before_anything_starts(home):
    with _launch(name="twin") as pc:
        with pytest.raises(packlab.PacklabError, match=r"name='twin' is taken.*pid \d+") as e:
            packlab.launch(workers=1, cores=1, memory="1GiB", name="twin")
        assert e.value.field == "name"
        assert [x.name for x in registry.entries()] == [pc.name]
    with pytest.raises(packlab.PacklabError, match=r"name='\.\./x' is invalid"):
        packlab.launch(workers=1, name="../x")


def test_connect_finds_address_and_tls_credentials(home):
    with _launch(name="tls-one") as pc:
        with packlab.connect("tls-one") as client:
            assert client.scheduler.address == pc.scheduler_address
            assert client.submit(sum, [1, 2, 3]).result(timeout=60) == 6
        # A client with a CA of its own (not this cluster's credentials) is refused.
        from distributed import Client, Security

        with pytest.raises((OSError, TimeoutError)):
            Client(pc.scheduler_address, security=Security.temporary(), timeout=3).close()


def test_connect_to_an_unknown_name_lists_the_running_ones(home):
    with pytest.raises(packlab.PacklabError, match=r"name='nope' is not a running cluster.*none"):
        packlab.connect("nope")
    with _launch(name="known-one"):
        with pytest.raises(packlab.PacklabError, match=r"running ones are 'known-one'") as e:
            packlab.connect("nope")
        assert e.value.field == "name"


def test_connect_from_another_process_and_dead_entry_ignored_and_cleaned(home, tmp_path):
    """A cluster launched by another process is reached by name; once that process is
    SIGKILLed (no chance to unregister), its entry is ignored and removed."""
    script = tmp_path / "run_cluster.py"
    script.write_text(textwrap.dedent("""
        import sys, time, warnings
        import packlab
        if __name__ == "__main__":
            warnings.simplefilter("ignore")
            pc = packlab.launch(workers=1, cores=1, memory="1GiB", wait=True, name="elsewhere")
            print(pc.name, flush=True)
            time.sleep(600)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "HOME": str(home)}, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "elsewhere"
        (e,) = registry.entries()
        assert e.pid == proc.pid
        with packlab.connect("elsewhere") as client:
            assert client.submit(pow, 2, 5).result(timeout=60) == 32
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert (home / ".packlab" / "clusters" / "elsewhere.json").exists()  # it had no chance to clean up
    assert registry.entries() == []
    assert os.listdir(home / ".packlab" / "clusters") == []
    with pytest.raises(packlab.PacklabError, match="not a running cluster"):
        packlab.connect("elsewhere")


def test_files_of_others_or_readable_by_others_are_ignored(home):
    d = registry.directory()
    entry = {"name": "planted", "backend": "local", "scheduler": "tcp://127.0.0.1:1", "dashboard": None,
             "tls": None, "pid": os.getpid(), "host": "another-host", "started": 0.0}
    path = os.path.join(d, "planted.json")
    with open(path, "w") as f:
        json.dump(entry, f)
    os.chmod(path, 0o644)  # another user could have written it through a lax umask
    assert registry.entries() == []
    os.chmod(path, 0o600)
    assert [e.name for e in registry.entries()] == ["planted"]  # another host's: kept, unchecked


def test_a_queue_records_its_store_on_the_entry_and_in_recent_stores(home, tmp_path):
    store = str(tmp_path / "q.db")
    with _launch(name="with-store") as pc, packlab.JobQueue(pc, store=store) as q:
        assert q.submit(abs, -3).result(timeout=60) == 3
        (e,) = registry.entries()
        assert e.store == store
        assert [r["path"] for r in registry.recent_stores()] == [store]
    assert _mode(home / ".packlab" / "stores.json") == 0o600
    os.remove(store)
    assert registry.recent_stores() == []  # a store that is gone is not listed


def test_an_unusable_registry_warns_and_the_cluster_still_runs(home):
    (home / ".packlab").symlink_to(home)  # a link: private_directory never follows it
    with pytest.warns(packlab.PacklabWarning, match=r"not recorded in ~/.packlab/clusters"):
        pc = packlab.launch(workers=1, cores=1, memory="1GiB", wait=True)
    with pc:
        assert pc.client.submit(abs, -2).result(timeout=60) == 2
