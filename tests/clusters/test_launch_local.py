"""packlab.launch on the local backend: input checks, right-sizing, profiles, TLS, adaptive."""

from __future__ import annotations

import time
import warnings

import dask
import dask.config
import pytest
from distributed import Client, Security
from distributed.deploy.spec import SpecCluster
from hypothesis import given
from hypothesis import strategies as st

import packlab
from packlab.clusters import ClusterRequest
from packlab.clusters.adaptive import cooldown_decision
from packlab.clusters.local import LocalBackend
from packlab.errors import ConfigError, PacklabError
from packlab.resources import this_machine

SMALL = {"cores": 1, "memory": "1GiB"}


def running_clusters() -> int:
    return sum(1 for c in list(SpecCluster._instances) if c.status.name == "running")


def quiet_launch(**kwargs) -> packlab.PackCluster:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", packlab.PacklabWarning)
        return packlab.launch(**kwargs)


def wait_until(predicate, timeout: float, what: str) -> float:
    """Poll ``predicate`` until true; return when it became true (monotonic seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# -- input validation --------------------------------------------------------------
BAD_INPUT = [
    ({"profile": "nope"}, "profile='nope'"),
    ({"backend": "nope"}, "backend='nope'"),
    ({"memory": "lots"}, "memory='lots'"),
    ({"memory": 0}, "memory=0"),
    ({"cores": 0}, "cores=0"),
    ({"cores": -1}, "cores=-1"),
    ({"cores": 1.5}, "cores=1.5"),
    ({"workers": -1}, "workers=-1"),
    ({"workers": True}, "workers=True"),
    ({"walltime": "1:99:00"}, "walltime='1:99:00'"),
    ({"walltime": "soon"}, "walltime='soon'"),
    ({"walltime": "00:00:00"}, "walltime='00:00:00'"),
    ({"min_workers": 3, "max_workers": 1}, "min_workers=3"),
    ({"min_workers": -1, "max_workers": 2}, "min_workers=-1"),
    ({"max_workers": 0}, "max_workers=0"),
    ({"workers": 2, "min_workers": 1}, "workers="),
    ({"workers": 2, "max_workers": 4}, "workers="),
    ({"spot": True}, "spot=True"),
    ({"spot": "yes"}, "spot='yes'"),
    ({"gpus": -1}, "gpus=-1"),
    ({"cooldown": "-5s"}, "cooldown='-5s' is invalid: expected a duration of 0 or more"),
    ({"cooldown": -5}, "cooldown=-5 is invalid: expected a duration of 0 or more"),
    ({"cooldown": "soon"}, "cooldown='soon'"),
]


@pytest.mark.parametrize("kwargs, field", BAD_INPUT, ids=[f for _, f in BAD_INPUT])
def test_bad_input_names_the_field_and_starts_nothing(kwargs, field):
    before = running_clusters()
    with pytest.raises(PacklabError) as err:
        packlab.launch(**kwargs)
    msg = str(err.value)
    assert field in msg
    # Every message says what to do, not only what was wrong.
    assert any(w in msg for w in ("expected", "choose", "pass", "set ", "use ", "needs")), msg
    assert running_clusters() == before


def test_gpus_asked_explicitly_on_a_machine_without_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # this process sees no GPU, whatever the host has
    with pytest.raises(PacklabError, match=r"gpus=1 is more than this machine has \(0"):
        packlab.launch(gpus=1, workers=0)


def test_profile_gpu_without_a_gpu_is_a_note_not_an_error(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.warns(packlab.PacklabWarning, match="running on CPU"):
        pc = packlab.launch(profile="ml-training", workers=0, **SMALL)
    with pc:
        assert pc.profile.gpus == 0
        assert any("GPU" in n for n in pc.notes)


def test_unknown_profile_lists_the_real_ones():
    with pytest.raises(PacklabError) as err:
        packlab.launch(profile="nope")
    for name in packlab.PROFILES:
        assert name in str(err.value)


# -- right-sizing to this machine ----------------------------------------------------
def test_more_cores_than_the_machine_is_clamped_with_a_note():
    cpus = this_machine().cpus
    with pytest.warns(packlab.PacklabWarning, match=f"this machine has {cpus} CPUs"):
        pc = packlab.launch(workers=0, cores=cpus + 1, memory="1GiB")
    with pc:
        assert pc.profile.cores == cpus
        assert len(pc.notes) == 1


def test_more_memory_than_the_machine_is_clamped_with_a_note():
    total = this_machine().memory
    with pytest.warns(packlab.PacklabWarning, match="per worker x 1 workers"):
        pc = packlab.launch(workers=0, cores=1, memory=2 * total)
    with pc:
        reserve = float(packlab.config.get("local.reserve-memory"))
        assert pc.profile.memory == int(total * (1 - reserve))


def test_one_thread_per_worker_cannot_shrink_and_the_note_says_they_share():
    cpus = this_machine().cpus
    one = packlab.PROFILES["general-batch"].with_overrides(cores=1, memory=2**28)
    sized, notes = LocalBackend().right_size(ClusterRequest("local", one, workers=cpus + 1))
    assert sized.cores == 1
    assert notes == [
        f"profile 'general-batch' asks 1 cores per worker x {cpus + 1} workers, but this machine "
        f"has {cpus} CPUs: the workers will share the CPUs."
    ]


def test_sizes_that_fit_are_not_changed():
    with warnings.catch_warnings():
        warnings.simplefilter("error", packlab.PacklabWarning)
        pc = packlab.launch(workers=0, **SMALL)
    with pc:
        assert pc.notes == []
        assert (pc.profile.cores, pc.profile.memory) == (1, 2**30)


# -- profiles from dask.config ----------------------------------------------------
def test_user_profile_from_dask_config_is_used():
    spec = {"cores": 1, "memory": "512MiB", "walltime": "00:20:00", "description": "tiny"}
    with dask.config.set({"packlab.profiles.mine": spec}):
        assert "mine" in packlab.PROFILES
        pc = quiet_launch(profile="mine", workers=1, wait=60)
        with pc:
            assert (pc.profile.name, pc.profile.memory, pc.profile.walltime) == ("mine", 2**29, 1200)
            info = pc.client.scheduler_info()["workers"]
            assert [w["memory_limit"] for w in info.values()] == [2**29]
    assert "mine" not in packlab.PROFILES


def test_profiles_get_and_in_do_not_raise_for_unknown_names():
    assert "nope" not in packlab.PROFILES
    assert packlab.PROFILES.get("nope") is None
    assert packlab.PROFILES.get("analytics").cores == 4


def test_built_in_profile_can_be_overridden():
    with dask.config.set({"packlab.profiles.analytics.cores": 1}):
        assert packlab.PROFILES["analytics"].cores == 1
    assert packlab.PROFILES["analytics"].cores == 4


@pytest.mark.parametrize(
    "spec, key",
    [
        ({"cores": 0, "memory": "1GiB"}, "packlab.profiles.mine.cores=0"),
        ({"cores": 1, "memory": "lots"}, "packlab.profiles.mine.memory='lots'"),
        ({"cores": 1, "memory": "1GiB", "walltime": "1:99:00"}, "packlab.profiles.mine.walltime"),
        ({"cores": 1, "memory": "1GiB", "gpus": -1}, "packlab.profiles.mine.gpus=-1"),
        ({"cores": 1}, "packlab.profiles.mine must set both"),
        ({"cores": 1, "memory": "1GiB", "colour": "red"}, "packlab.profiles.mine has unknown field"),
        ("big", "packlab.profiles.mine must be a mapping"),
    ],
)
def test_invalid_profile_in_config_is_a_config_error_naming_the_key(spec, key):
    with dask.config.set({"packlab.profiles.mine": spec}):
        with pytest.raises(ConfigError) as err:
            packlab.launch(profile="mine", workers=0)
        assert key in str(err.value)


def test_a_broken_user_profile_does_not_break_the_others():
    with dask.config.set({"packlab.profiles.mine": {"cores": 0, "memory": "1GiB"}}):
        assert packlab.PROFILES["analytics"].cores == 4
        pc = quiet_launch(profile="general-batch", workers=0, **SMALL)
        pc.close()


# -- TLS ------------------------------------------------------------------------------
def test_tls_refuses_clients_without_the_certificates(local_cluster):
    # set_as_default=False: a Client that fails to connect would otherwise leave dask's
    # scheduler setting pointing at it.
    addr = local_cluster.scheduler_address
    assert addr.startswith("tls://")
    assert local_cluster.client.submit(sum, [1, 2]).result() == 3  # our own client works
    with pytest.raises((OSError, TimeoutError)):
        Client(addr.replace("tls://", "tcp://"), timeout="5s", set_as_default=False)  # plain TCP
    with pytest.raises((OSError, TimeoutError), match="certificate"):
        Client(addr, security=Security.temporary(), timeout="5s", set_as_default=False)  # other certs
    with pytest.raises(TypeError, match="TLS"):
        Client(addr, timeout="5s", set_as_default=False)  # TLS with no certificates at all


def test_security_false_is_plain_tcp_and_warns():
    with pytest.warns(packlab.clusters.PacklabSecurityWarning, match="any user who can reach its port"):
        pc = quiet_launch(workers=0, security=False, **SMALL)
    with pc:
        assert pc.scheduler_address.startswith("tcp://")
        assert pc.security is None


# -- adaptive with cooldown ----------------------------------------------------------
def _sleep(x, seconds=0.5):
    time.sleep(seconds)
    return x


def test_adapt_scales_up_under_load_and_to_zero_when_idle_after_the_cooldown():
    cooldown = 8.0
    # A short target duration so a modest queue asks for both workers.
    with dask.config.set({"distributed.adaptive.target-duration": "1s"}):
        pc = quiet_launch(workers=0, **SMALL)
        with pc:
            ad = pc.adapt(minimum=0, maximum=2, cooldown=f"{cooldown}s")
            assert (ad.minimum, ad.maximum, ad.cooldown) == (0, 2, cooldown)
            futures = pc.client.map(_sleep, range(24), pure=False)
            wait_until(lambda: pc.workers == 2, 120, "adaptive to reach 2 workers")
            assert sum(f.result() for f in futures) == sum(range(24))
            del futures  # a worker holding results is kept by Dask; release them
            assert pc.workers <= 2
            assert ad.scale_ups >= 1

            wait_until(lambda: pc.workers == 0, 120, "adaptive to scale back to zero")
            assert ad.scale_downs >= 1
            # The cooldown is a guaranteed lower bound: no scale-down follows a scale-up sooner.
            assert ad.last_down - ad.last_up >= cooldown
            assert ad.held >= 1  # the idle cluster asked to shrink during the cooldown

            # Scaling up from zero is never held, even right after a scale-down.
            assert pc.client.submit(_sleep, 7, 0.1, pure=False).result(timeout=120) == 7


def test_adapt_rejects_bad_bounds(local_cluster):
    with pytest.raises(PacklabError, match="minimum=3 is greater than maximum=1"):
        local_cluster.adapt(minimum=3, maximum=1)
    with pytest.raises(PacklabError, match="cooldown='later'"):
        local_cluster.adapt(minimum=0, maximum=2, cooldown="later")
    with pytest.raises(PacklabError, match=r"scale\(n\)=-1"):
        local_cluster.scale(-1)
    assert local_cluster.adaptive is None


# -- the cooldown rule, as a pure function ------------------------------------------
def decide(status, *, now, last_busy=None, last_down=None, cooldown=60.0, current=1):
    rec = {"status": status, "workers": ["w"]} if status == "down" else {"status": status, "n": 3}
    return cooldown_decision(
        rec, now=now, last_busy=last_busy, last_down=last_down, cooldown=cooldown, current=current
    )


def test_cooldown_holds_a_scale_down_soon_after_the_cluster_was_busy():
    assert decide("down", now=100.0, last_busy=50.0) == {"status": "same", "held": "down"}
    assert decide("down", now=110.0, last_busy=50.0)["status"] == "down"  # exactly the cooldown
    assert decide("down", now=100.0, last_busy=None)["status"] == "down"  # never busy


def test_cooldown_holds_a_scale_up_soon_after_a_scale_down_unless_at_zero():
    assert decide("up", now=100.0, last_down=50.0, current=2) == {"status": "same", "held": "up"}
    assert decide("up", now=100.0, last_down=50.0, current=0) == {"status": "up", "n": 3}
    assert decide("up", now=200.0, last_down=50.0, current=2)["status"] == "up"


def test_cooldown_zero_and_same_pass_through():
    assert decide("down", now=100.0, last_busy=99.9, cooldown=0.0)["status"] == "down"
    assert decide("same", now=100.0, last_busy=99.0, last_down=99.0) == {"status": "same", "n": 3}


@given(
    status=st.sampled_from(["up", "down", "same"]),
    now=st.floats(0, 1e6),
    last_busy=st.none() | st.floats(0, 1e6),
    last_down=st.none() | st.floats(0, 1e6),
    cooldown=st.floats(0, 1e4),
    current=st.integers(0, 100),
)
def test_cooldown_decision_only_ever_holds_a_reversal(status, now, last_busy, last_down, cooldown, current):
    out = decide(status, now=now, last_busy=last_busy, last_down=last_down, cooldown=cooldown,
                 current=current)
    if out.get("held") is None:
        assert out["status"] == status
        return
    assert out == {"status": "same", "held": status}
    recent = last_busy if status == "down" else last_down
    assert recent is not None and now - recent < cooldown
    assert status == "down" or current > 0
