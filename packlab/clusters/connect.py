"""``packlab.connect``: a client for a running cluster of yours, found by its name."""

from __future__ import annotations

from distributed import Client, Security

from .. import checks
from . import registry


def connect(name: str, timeout: float | str = "10s") -> Client:
    """A ``distributed.Client`` of your running cluster ``name`` (``pc.name``).

    The scheduler address and the TLS credentials come from the owner-only registry
    (``~/.packlab/clusters``), so a notebook, a script or another process of yours reaches
    a cluster that :func:`packlab.launch` started elsewhere (e.g. from JupyterLab's
    packlab sidebar) with two lines. Closing this client leaves the cluster running.

    Parameters
    ----------
    name : str
        The cluster's name: ``launch(name=...)``, or the one generated (``pc.name``).
    timeout : float or str
        How long to try to reach the scheduler.

    Raises
    ------
    PacklabError
        No running cluster of yours has that name; the message lists the running ones.

    Examples
    --------
    >>> import packlab
    >>> with packlab.launch(workers=1, cores=1, memory="1GiB", wait=True) as pc:
    ...     with packlab.connect(pc.name) as client:
    ...         client.submit(sum, [1, 2]).result()
    3
    """
    entry = registry.lookup(name)
    seconds = checks.duration(timeout, "timeout", allow_zero=False)
    security = None
    if entry.tls is not None:
        security = Security(tls_ca_file=entry.tls.get("ca"), tls_client_cert=entry.tls.get("cert"),
                            tls_client_key=entry.tls.get("key"), require_encryption=True)
    return Client(entry.scheduler, security=security, timeout=seconds)
