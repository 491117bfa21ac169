"""Safe defaults for a cluster on a shared machine: TLS, a loopback dashboard, private dirs.

On a login node every other user can reach every port and read every world-readable
file. So packlab's clusters speak TLS, their dashboard listens on 127.0.0.1 only (it
serves worker logs, call stacks, task names and ``/metrics`` without authentication),
and the directories packlab writes certificates and logs to are owner-only (0700).
Each of these can be opened up, but only by an explicit setting, and then packlab warns.
"""

from __future__ import annotations

import ipaddress
import os
import stat
import warnings

from distributed import Security

from .. import config
from ..errors import PacklabError, bad_value

#: What ``packlab.dashboard.address`` defaults to: loopback, any free port.
LOOPBACK_DASHBOARD = "127.0.0.1:0"


class PacklabSecurityWarning(UserWarning):
    """A setting opens a cluster to other users or hosts; packlab does as told and says so."""


def _is_loopback(host: str) -> bool:
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
    if not _is_loopback(host):
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


def private_directory(path: str, field: str) -> str:
    """Create ``path`` (and missing parents) owner-only (0700); refuse a symlink or another owner.

    The path is walked one component at a time, each opened without following a symbolic
    link (``O_NOFOLLOW`` relative to its parent's descriptor) and each missing one created
    there, so no link planted anywhere along the path is followed: an ancestor that is a
    link is followed only when the link is root's or yours and sits in a directory that
    others cannot write to (e.g. a system's ``/var -> /private/var``). The last component
    is never a link. An existing directory of ours that others may read is tightened to
    0700; a directory of another user is an error.

    Examples
    --------
    >>> import tempfile, os
    >>> d = private_directory(os.path.join(tempfile.mkdtemp(), "a", "b"), "dir")
    >>> oct(os.stat(d).st_mode & 0o777)
    '0o700'
    """
    path = os.path.abspath(os.path.expanduser(path))
    fd = _open_private(path, field)
    try:
        st = os.fstat(fd)
        if st.st_uid != os.getuid():
            raise PacklabError(
                f"{field}={path!r} belongs to uid {st.st_uid}, not to you (uid {os.getuid()}): "
                "another user could read your TLS keys there. Use a directory of your own.",
                field=field, value=path,
            )
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
    return path


_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


def _open_private(path: str, field: str) -> int:
    """A descriptor of the directory ``path``, reached without following an untrusted link."""
    todo = [p for p in path.split(os.sep) if p]
    fd = os.open(os.sep, os.O_RDONLY | os.O_DIRECTORY)
    hops = 0
    try:
        while todo:
            name = todo.pop(0)
            last = not todo
            try:
                child = os.open(name, _DIR, dir_fd=fd)
            except FileNotFoundError:
                try:
                    os.mkdir(name, 0o700, dir_fd=fd)
                except FileExistsError:  # made meanwhile by someone else: opened and checked below
                    pass
                child = _open_or_refuse(name, fd, path, field, last)
            except OSError:
                target = _trusted_link(name, fd, path, field, last)
                hops += 1
                if hops > 40:
                    raise _refuse(path, field, "a loop of symbolic links") from None
                if os.path.isabs(target):
                    os.close(fd)
                    fd = os.open(os.sep, os.O_RDONLY | os.O_DIRECTORY)
                todo[:0] = [p for p in target.split(os.sep) if p]
                continue
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_or_refuse(name: str, parent: int, path: str, field: str, last: bool) -> int:
    try:
        return os.open(name, _DIR, dir_fd=parent)
    except OSError:
        _trusted_link(name, parent, path, field, last=True)  # raises: never follow it now
        raise  # pragma: no cover


def _trusted_link(name: str, parent: int, path: str, field: str, last: bool) -> str:
    """The target of the link ``name`` in ``parent`` if it may be followed, else an error."""
    try:
        st = os.lstat(name, dir_fd=parent)
    except OSError as e:
        raise _refuse(path, field, f"not a directory we can open ({e.strerror})") from None
    if not stat.S_ISLNK(st.st_mode):
        raise _refuse(path, field, f"not a directory we can open ({name!r} is not a directory)")
    where = os.fstat(parent)
    open_to_others = stat.S_IMODE(where.st_mode) & 0o022 and not where.st_mode & stat.S_ISVTX
    if last or st.st_uid not in (0, os.getuid()) or open_to_others:
        owner = "" if st.st_uid == os.getuid() else f", owned by uid {st.st_uid}"
        raise _refuse(path, field, f"a symbolic link, or passes through one ({name!r}{owner})")
    return os.readlink(name, dir_fd=parent)


def _refuse(path: str, field: str, what: str) -> PacklabError:
    return PacklabError(
        f"{field}={path!r} is {what}: packlab writes TLS certificates and logs there and never "
        "through a link someone else could have planted. Remove it, or set the setting to a "
        "directory of yours.", field=field, value=path,
    )
