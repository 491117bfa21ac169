"""Every listener of a SLURM-backed cluster, read from the real sockets of the scheduler
(this process), the nannies and the workers (the SLURM jobs' processes): Dask's own ports
refuse plain TCP and foreign certificates, and no HTTP server (dashboards, /metrics)
listens beyond 127.0.0.1. The same check as the local clusters' in
tests/clusters/test_cluster_security.py (support.assert_no_open_listener)."""

from __future__ import annotations

import urllib.request

import pytest
from distributed import Client, Security
from slurm_jobs import small
from support import assert_no_open_listener, cluster_listeners, dashboard_binds, network_interface

pytestmark = pytest.mark.slurm


def test_slurm_cluster_listeners_refuse_strangers_and_http_is_loopback_only(figure):
    iface = network_interface()
    with small(workers=1, wait=120, interface=iface) as pc:
        address = pc.scheduler_address
        assert address.startswith("tls://") and not address.startswith("tls://127.")
        # A Client as a user would make it: without the certificates it is refused.
        with pytest.raises((OSError, TimeoutError)):
            Client(address.replace("tls://", "tcp://"), timeout="3s", set_as_default=False)
        with pytest.raises((OSError, TimeoutError)):
            Client(address, security=Security.temporary(), timeout="3s", set_as_default=False)
        counts = assert_no_open_listener(pc)
        seen = cluster_listeners(pc)
        assert dashboard_binds(pc.dashboard_link) == {"127.0.0.1"}
        # The link says where it listens (Dask's named the scheduler's network address).
        assert pc.dashboard_link.startswith("http://127.0.0.1:")
        assert urllib.request.urlopen(pc.dashboard_link, timeout=10).status == 200
    roles = sorted({(role, what) for role, what, _, _ in seen})
    assert roles == [("nanny", "comm"), ("scheduler", "comm"), ("scheduler", "http"),
                     ("worker", "comm"), ("worker", "http")]
    assert counts.get("comm-wider", 0) == 3  # scheduler, worker and nanny on the network, TLS
    figure("slurm_listeners", len(seen),
           f"SLURM cluster on {iface}: {len(seen)} listeners read from the sockets "
           f"({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}); every comm port refused "
           "plain TCP and foreign certificates, every HTTP server on 127.0.0.1")
