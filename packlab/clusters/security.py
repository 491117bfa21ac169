"""Safe defaults for a cluster on a shared machine: TLS, a loopback dashboard, private dirs.

On a login node every other user can reach every port and read every world-readable
file. So packlab's clusters speak TLS, their dashboard listens on 127.0.0.1 only (it
serves worker logs, call stacks, task names and ``/metrics`` without authentication),
and the directories packlab writes certificates and logs to are owner-only (0700).
Each of these can be opened up, but only by an explicit setting, and then packlab warns.
"""

from __future__ import annotations

import ipaddress
import warnings

from distributed import Security

from .. import config
from ..errors import PacklabSecurityWarning, bad_value

#: What ``packlab.dashboard.address`` defaults to: loopback, any free port.
LOOPBACK_DASHBOARD = "127.0.0.1:0"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 in brackets or not) is this machine's
    loopback: the one check of it in packlab.

    Examples
    --------
    >>> is_loopback("127.0.0.1"), is_loopback("[::1]"), is_loopback("localhost"), is_loopback("0.0.0.0")
    (True, True, True, False)
    """
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_dashboard_address(value: object, field: str) -> tuple[str, int]:
    """``(host, port)`` of a dashboard address ``"HOST:PORT"``, or a clear error.

    An empty host means every interface (``":8787"``). Dask's dashboard cannot take an
    IPv6 address (it splits the address at each ``:``), so one is refused here rather
    than failing inside Dask.

    Examples
    --------
    >>> parse_dashboard_address("localhost:8787", "dashboard_address")
    ('localhost', 8787)
    >>> parse_dashboard_address("::1", "dashboard_address")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    packlab.errors.PacklabError: dashboard_address='::1' is invalid: expected ... not an IPv6 address...
    """
    fix = 'Use "HOST:PORT", e.g. "127.0.0.1:8787" (this machine only) or "127.0.0.1:0" (any free port).'
    if not isinstance(value, str) or ":" not in value:
        raise bad_value(field, value, 'an address "HOST:PORT"', fix)
    host, _, port = value.rpartition(":")
    if ":" in host or host.startswith("["):
        raise bad_value(field, value, 'an address "HOST:PORT" with an IPv4 address or a host name, not an '
                        "IPv6 address (Dask's dashboard cannot listen on one)",
                        'For this machine only use "127.0.0.1:0" or "localhost:0".')
    if not port.isdigit() or int(port) > 65535:
        raise bad_value(field, value, 'an address "HOST:PORT" with a port from 0 to 65535', fix)
    return host, int(port)


def dashboard_address(value: object = None, field: str = "dashboard_address") -> str:
    """The dashboard address to bind: ``value`` (``launch(dashboard_address=)``) or the setting.

    ``packlab.dashboard.address`` defaults to ``127.0.0.1:0`` (loopback, a free port).
    Anything that is not loopback (``":8787"``, ``"0.0.0.0:8787"``, a host name) is honoured
    with a :class:`PacklabSecurityWarning`: the dashboard has no authentication. ``field``
    names where ``value`` was given (a backend keyword, too).

    Examples
    --------
    >>> dashboard_address()
    '127.0.0.1:0'
    >>> dashboard_address("localhost:8787")
    'localhost:8787'
    """
    if value is None:
        value, field = config.get("dashboard.address"), "packlab.dashboard.address"
    host, _ = parse_dashboard_address(value, field)
    if not is_loopback(host):
        where = host or "every interface"
        warnings.warn(
            f"{field}={value!r}: the Dask dashboard will listen on {where}, without authentication; "
            "anyone who can reach this host sees your worker logs, call stacks and task names. "
            f"Keep the default {LOOPBACK_DASHBOARD!r} and use an SSH tunnel "
            "(ssh -L 8787:127.0.0.1:PORT host) unless this host is yours alone.",
            PacklabSecurityWarning,
            stacklevel=4,
        )
    return value


def security_setting(value: object, field: str = "security") -> bool | Security:
    """Check ``security`` (a bool or a ``distributed.Security``); warn when it is off.

    A string such as ``"off"`` (also from ``DASK_PACKLAB__SECURITY=off``) is an error, not
    truthiness.

    Examples
    --------
    >>> security_setting(True)
    True
    >>> security_setting("off")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    packlab.errors.PacklabError: security='off' is invalid: expected True, False or a distributed...
    """
    if isinstance(value, Security):
        return value
    if not isinstance(value, bool):
        fix = None
        if isinstance(value, str):
            fix = ("A string is always truthy in Python: pass the bool False to turn TLS off (not "
                   "advised), or set packlab.security: false in a dask config file.")
        raise bad_value(field, value, "True, False or a distributed.Security", fix)
    if value is False:
        warnings.warn(
            f"{field}=False: the scheduler listens on plain TCP without authentication; any user "
            "who can reach its port (every user of a shared login node) can run code as you. "
            "Keep security=True (TLS with temporary certificates) unless this machine is yours alone.",
            PacklabSecurityWarning,
            stacklevel=4,
        )
    return value


def make_security(value: bool | Security) -> Security | None:
    """``True``: fresh temporary TLS certificates; a ``Security``: itself; ``False``: none."""
    if isinstance(value, Security):
        return value
    return Security.temporary() if value else None


#: Why a folder of the cluster's must be private (the reason :func:`packlab.files.private_directory`
#: gives when it refuses one).
PURPOSE = "packlab writes TLS certificates and logs there"
