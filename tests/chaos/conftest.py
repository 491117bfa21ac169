"""Fixtures shared by every chaos test (``figure`` is tests/conftest.py's): a seeded RNG
whose seed is printed (``PACKLAB_CHAOS_SEED`` replays a failure, ``PACKLAB_CHAOS_TRIALS``
runs more trials)."""

from __future__ import annotations

import os
import random
import warnings

import pytest

import packlab


@pytest.fixture
def chaos_trials():
    """``chaos_trials(default)``: how many trials to run, ``PACKLAB_CHAOS_TRIALS`` if set."""
    return lambda default: int(os.environ.get("PACKLAB_CHAOS_TRIALS") or default)


@pytest.fixture
def chaos_rng(request, figure):
    """A ``random.Random`` seeded from ``PACKLAB_CHAOS_SEED`` (else a fresh seed); the seed
    is printed and recorded so a failing run can be replayed exactly."""
    seed = int(os.environ.get("PACKLAB_CHAOS_SEED") or random.SystemRandom().randrange(2**32))
    figure("chaos_seed", seed, f"{request.node.name}: PACKLAB_CHAOS_SEED={seed}")
    return random.Random(seed)


@pytest.fixture(scope="package")
def chaos_cluster():
    """One named local cluster (2 TLS workers x 1 thread, 1 GiB) for the chaos tests that
    need no cluster of their own; other processes reach it with ``packlab.connect(pc.name)``.
    A test that kills its workers waits for the nanny's replacements before it ends."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", packlab.PacklabWarning)
        pc = packlab.launch(name=f"chaos-{os.getpid()}", workers=2, cores=1, memory="1GiB", wait=True)
    with pc:
        yield pc
