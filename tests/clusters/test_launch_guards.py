"""launch() refuses what can never work, before starting anything, and never hangs.

Scripts run as real subprocesses (a fresh interpreter each), since what is checked is
how a new user's program behaves: its main module, its threads, its imports.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import pytest
from distributed.deploy.spec import SpecCluster
from support import REPO

import packlab
from packlab.clusters import ClusterStartError

GUARD_MESSAGE = "without 'if __name__ == \"__main__\":'"


def run_script(tmp_path, body: str, timeout: float = 180) -> subprocess.CompletedProcess:
    script = tmp_path / "user_script.py"
    script.write_text(textwrap.dedent(body))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=timeout, cwd=tmp_path, env=env)


def running_clusters() -> int:
    return sum(1 for c in list(SpecCluster._instances) if c.status.name == "running")


@pytest.mark.parametrize("where", ["top level", "function called from the top level"])
def test_a_script_without_a_main_guard_gets_one_clear_error_and_exits(tmp_path, where):
    call = "pc = packlab.launch(workers=1, cores=1, memory='1GiB')"
    body = f"import packlab\n{call}\nprint('RAN')\n"
    if where != "top level":
        body = f"import packlab\ndef main():\n    {call}\n    print('RAN')\nmain()\n"
    r = run_script(tmp_path, body)
    assert r.returncode == 1
    assert "RAN" not in r.stdout
    assert r.stderr.count(GUARD_MESSAGE) == 1, r.stderr
    assert r.stderr.count("Traceback") == 1, r.stderr  # one error, no flood from workers
    assert "user_script.py (line 2)" in r.stderr or "user_script.py (line 5)" in r.stderr


def test_a_guarded_script_runs(tmp_path):
    r = run_script(tmp_path, """
        import warnings
        import packlab
        warnings.simplefilter("ignore")
        if __name__ == "__main__":
            with packlab.launch(workers=1, cores=1, memory="1GiB", wait=True) as pc:
                print("RESULT", pc.client.submit(sum, [1, 2]).result())
    """)
    assert r.returncode == 0, r.stderr
    assert "RESULT 3" in r.stdout


def test_first_launch_from_a_thread_works_and_the_local_backend_never_imports_dask_jobqueue(tmp_path):
    r = run_script(tmp_path, """
        import sys, threading, warnings
        warnings.simplefilter("ignore")
        out = []
        def start():
            import packlab
            with packlab.launch(workers=1, cores=1, memory="1GiB", wait=True) as pc:
                out.append(pc.client.submit(sum, [1, 2]).result())
        if __name__ == "__main__":
            t = threading.Thread(target=start)
            t.start()
            t.join()
            print("RESULT", out)
            print("JOBQUEUE", "dask_jobqueue" in sys.modules)
    """)
    assert r.returncode == 0, r.stderr
    assert "RESULT [3]" in r.stdout
    assert "JOBQUEUE False" in r.stdout


def test_a_worker_that_cannot_start_raises_its_cause_and_leaves_nothing_running():
    before = running_clusters()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ClusterStartError, match="No module named 'no_such_module_xyz'"):
            packlab.launch(workers=1, cores=1, memory="1GiB", preload=["no_such_module_xyz"])
    assert running_clusters() == before


def test_rich_repr_in_a_notebook_shows_backend_profile_workers_cores_memory_and_dashboard():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", packlab.PacklabWarning)
        pc = packlab.launch(workers=2, cores=1, memory="512MiB", wait=True)
    with pc:
        page = pc._repr_html_()
        assert "<table>" in page
        assert "<td style=\"text-align:left\">local</td>" in page
        assert pc.profile.summary() in page
        assert "2 (fixed)" in page
        assert "<th style=\"text-align:left\">Cores</th><td style=\"text-align:left\">2</td>" in page
        assert "1.00 GiB" in page  # 2 x 512 MiB
        assert f'<a href="{pc.dashboard_link}"' in page
        assert "TLS" in page
    assert "closed" in pc._repr_html_()  # still renders after close


def test_a_guard_with_more_conditions_is_a_guard(tmp_path):
    r = run_script(tmp_path, """
        import sys, warnings
        import packlab
        warnings.simplefilter("ignore")
        if __name__ == "__main__" and len(sys.argv) < 5:
            with packlab.launch(workers=0, cores=1, memory="1GiB") as pc:
                print("STARTED", pc.workers)
    """)
    assert r.returncode == 0, r.stderr
    assert "STARTED 0" in r.stdout


def test_an_or_is_not_a_guard():
    from packlab.clusters.mainguard import _guarded_lines

    source = ('import x\nif __name__ == "__main__" or x.flag:\n    x.go()\n'
              'if "__main__" == __name__:\n    x.go()\n')
    assert _guarded_lines(source) == [(5, 5)]


@pytest.mark.parametrize("sizing", [{"workers": 0}, {"min_workers": 0, "max_workers": 1}],
                         ids=["fixed-zero", "adaptive-from-zero"])
def test_no_initial_worker_still_raises_a_worker_that_cannot_start(sizing):
    # A worker keyword whose value only a starting worker can judge: one probe worker
    # starts in launch(), so the cause is raised there rather than a task hanging later.
    before = running_clusters()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ClusterStartError) as e:
            packlab.launch(cores=1, memory="1GiB", preload=["no_such_module_xyz"], **sizing)
    assert "No module named 'no_such_module_xyz'" in str(e.value)
    assert "Check the keywords passed on to Dask (preload=)" in str(e.value)
    assert running_clusters() == before


def test_an_adaptive_cluster_from_zero_with_worker_keywords_runs_work():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", packlab.PacklabWarning)
        pc = packlab.launch(min_workers=0, max_workers=1, cores=1, memory="1GiB", lifetime="1h",
                            cooldown=0)
    with pc:
        assert len(pc.cluster.worker_spec) == 0  # the probe worker was stopped
        assert pc.client.submit(sum, [1, 2]).result(timeout=120) == 3


def test_any_failure_of_the_cluster_constructor_is_a_start_error_that_leaks_nothing():
    before = running_clusters()
    with pytest.raises(ClusterStartError) as e:
        packlab.launch(workers=0, cores=1, memory="1GiB", scheduler_kwargs={"bogus_option": 1})
    assert "TypeError" in str(e.value) and "bogus_option" in str(e.value)
    assert "Check the keywords passed on to Dask (scheduler_kwargs=)" in str(e.value)
    assert not isinstance(e.value, ValueError)
    assert running_clusters() == before


def test_a_closed_cluster_refuses_to_scale_as_a_runtime_state():
    from packlab.clusters import ClusterClosed

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", packlab.PacklabWarning)
        pc = packlab.launch(workers=0, cores=1, memory="1GiB")
    pc.close()
    for call in (lambda: pc.scale(1), lambda: pc.adapt(0, 2), lambda: pc.wait_for_workers(1)):
        with pytest.raises(ClusterClosed) as e:
            call()
        assert not isinstance(e.value, ValueError)
        assert "is closed" in str(e.value) and "packlab.launch()" in str(e.value)
    assert "fixed" in repr(pc)
