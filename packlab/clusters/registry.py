"""The owner-only registry of this user's running clusters, and of recent queue stores.

Each running :class:`~packlab.clusters.PackCluster` is one JSON file in
``~/.packlab/clusters/`` (a 0700 directory; 0600 files): its name, backend, scheduler
address, dashboard, the paths of its TLS credentials, and the pid and host of the
process that runs it. :func:`packlab.connect` reads it to reach a cluster by name from
another notebook or from JupyterLab's sidebar. Temporary certificates
(``security=True``) exist only in memory, so the client's CA, certificate and key are
written next to the entry, owner-only, and removed with it.

An entry goes when its cluster closes (or its process exits). An entry whose process is
gone (this host, pid not alive: it was killed) is *dead*: every read skips it and removes
it. Entries of other hosts (a home directory shared by login nodes) cannot be checked
and are kept. Files that are not ours, or that others could read, are ignored: no one
else can plant a cluster for us to connect to.

Examples
--------
>>> import packlab
>>> with packlab.launch(workers=1, cores=1, memory="1GiB") as pc:
...     pc.name in [e.name for e in entries()]
True
>>> pc.name in [e.name for e in entries()]
False
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import random
import re
import socket
import stat
import threading
import time
import weakref
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ..errors import PacklabError, bad_value
from ..files import atomic_write, pid_alive, private_directory, temporary_name
from .security import PURPOSE

if TYPE_CHECKING:
    from .base import PackCluster

#: Where entries live (``~`` is the user's home, read at each call).
HOME = os.path.join("~", ".packlab")
logger = logging.getLogger(__name__)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ADJECTIVES = ("amber", "brisk", "calm", "deft", "eager", "fleet", "gentle", "hardy", "keen", "lively",
               "merry", "nimble", "proud", "quick", "quiet", "rapid", "steady", "sturdy", "swift", "wise")
_ANIMALS = ("badger", "bison", "coyote", "dingo", "fox", "heron", "husky", "jackal", "lynx", "marten",
            "otter", "puma", "raven", "stoat", "wolf", "wombat", "yak", "zebra", "hare", "ibex")
#: Recent stores kept (most recent first).
RECENT_STORES = 20

# Clusters registered by this process: name -> the PackCluster (to see that one closed).
_mine: dict[str, weakref.ref] = {}
_lock = threading.Lock()


class NameTaken(PacklabError):
    """A running cluster of this user already has the name."""


@dataclass(frozen=True)
class Entry:
    """One running cluster as the registry records it."""

    name: str
    backend: str
    scheduler: str
    dashboard: str | None
    #: ``{"ca": path, "cert": path, "key": path}`` for a TLS cluster, else ``None``.
    tls: dict[str, str | None] | None
    pid: int
    host: str
    started: float
    profile: str | None = None
    store: str | None = None
    #: The store its telemetry went to when it started (``launch(store=)``, else a private
    #: temporary file); a JobQueue opened on it takes that over (``store``).
    telemetry: str | None = None

    @property
    def local(self) -> bool:
        """Whether the process running this cluster is on this host."""
        return self.host == socket.gethostname()

    def alive(self) -> bool:
        """False when its process is gone (on this host), or it closed (in this process)."""
        if not self.local:
            return True  # another login node's: it cannot be checked from here
        if self.pid == os.getpid():
            ref = _mine.get(self.name)
            pc = ref() if ref is not None else None
            return pc is not None and not pc.closed
        return pid_alive(self.pid)


def directory() -> str:
    """``~/.packlab/clusters``, created owner-only (0700) if missing.

    Examples
    --------
    >>> oct(os.stat(directory()).st_mode & 0o777)
    '0o700'
    """
    private_directory(HOME, "~/.packlab", purpose=PURPOSE)
    return private_directory(os.path.join(HOME, "clusters"), "~/.packlab/clusters", purpose=PURPOSE)


def check_name(value: object, field: str = "name") -> str:
    """``value`` if it is a valid cluster name: letters, digits, ``-``, ``_``, ``.``.

    Examples
    --------
    >>> check_name("night-run")
    'night-run'
    >>> check_name("../x")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    packlab.errors.PacklabError: name='../x' is invalid: expected a name of 1 to 64 letters, digits...
    """
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise bad_value(field, value, "a name of 1 to 64 letters, digits, '-', '_' or '.', starting with a "
                        "letter or digit", 'e.g. name="night-run"; leave it out for a generated one.')
    return value


def new_name() -> str:
    """A readable name that no live cluster of this user has, e.g. ``"brisk-otter"``."""
    try:
        taken = {e.name for e in entries()}
    except (OSError, PacklabError):  # an unusable ~/.packlab: launch() warns when it registers
        taken = set()
    rng = random.SystemRandom()
    for _ in range(50):
        name = f"{rng.choice(_ADJECTIVES)}-{rng.choice(_ANIMALS)}"
        if name not in taken:
            return name
    return f"{rng.choice(_ADJECTIVES)}-{rng.choice(_ANIMALS)}-{rng.randrange(10_000)}"


def check_free(name: str) -> None:
    """Raise if a live cluster already has ``name`` (before :func:`packlab.launch` starts one)."""
    for e in entries():
        if e.name == name:
            raise NameTaken(
                f"name={name!r} is taken: a cluster of that name runs (pid {e.pid} on {e.host}, scheduler "
                f"{e.scheduler}). Choose another name, or leave name= out for a generated one.",
                field="name", value=name)


# -- writing --------------------------------------------------------------------------


def _is_pem(value: object) -> bool:
    return isinstance(value, str) and value.lstrip().startswith("-----BEGIN")


def _credentials(name: str, security: Any) -> dict[str, str | None] | None:
    """The paths of a client's CA, certificate and key; in-memory ones written 0600."""
    if security is None:
        return None
    given = {"ca": security.tls_ca_file, "cert": security.tls_client_cert, "key": security.tls_client_key}
    if not any(_is_pem(v) for v in given.values()):
        return given  # files the user made: recorded, not copied
    where = private_directory(os.path.join(directory(), f"{name}.tls"), "~/.packlab/clusters",
                              purpose=PURPOSE)
    paths: dict[str, str | None] = {}
    for kind, value in given.items():
        if _is_pem(value):
            paths[kind] = os.path.join(where, f"{kind}.pem")
            atomic_write(paths[kind], value.encode())
        else:
            paths[kind] = value
    return paths


def register(pc: PackCluster, name: str, store: str | None = None) -> Entry:
    """Record the running ``pc`` as ``name``; raises if a live cluster has that name."""
    entry = Entry(name=name, backend=pc.backend, scheduler=pc.scheduler_address,
                  dashboard=_dashboard(pc), tls=_credentials(name, pc.security), pid=os.getpid(),
                  host=socket.gethostname(), started=time.time(), profile=pc.profile.name, store=store,
                  telemetry=getattr(getattr(pc, "telemetry", None), "store", None))
    path = os.path.join(directory(), f"{name}.json")
    tmp = temporary_name(path)
    atomic_write(tmp, json.dumps(asdict(entry), indent=1).encode())
    try:
        for _ in range(2):
            try:
                os.link(tmp, path)  # fails if the name exists: one cluster per name
                break
            except FileExistsError:
                old = _read(path)
                if old is not None and old.alive():
                    msg = f"name={name!r} was just taken (pid {old.pid}): pick another."
                    raise NameTaken(msg, field="name", value=name) from None
                _remove(name, keep_tls=True)
    finally:
        os.unlink(tmp)
    with _lock:
        _mine[name] = weakref.ref(pc)
    return entry


def _dashboard(pc: PackCluster) -> str | None:
    try:
        return pc.dashboard_link
    except Exception:  # no dashboard (bokeh missing, or dashboard_address=None)
        return None


def unregister(name: str) -> None:
    """Remove this process's entry ``name`` (when its cluster closes); others' stay."""
    with _lock:
        _mine.pop(name, None)
    e = _read(os.path.join(directory(), f"{name}.json"))
    if e is not None and e.local and e.pid == os.getpid():
        _remove(name)


def set_store(name: str, store: str) -> None:
    """Note that the queue of this process's cluster ``name`` uses ``store``."""
    path = os.path.join(directory(), f"{name}.json")
    e = _read(path)
    if e is not None and e.pid == os.getpid() and e.store != store:
        atomic_write(path, json.dumps({**asdict(e), "store": store}, indent=1).encode())


def _remove(name: str, keep_tls: bool = False) -> None:
    d = directory()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(d, f"{name}.json"))
    if keep_tls:
        return
    tls = os.path.join(d, f"{name}.tls")
    try:  # opened without following a link: a link there is removed, not emptied through
        fd = os.open(tls, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return
    except OSError:  # a link (or a file) in its place
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tls)
        return
    try:
        for f in os.listdir(fd):
            with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
                os.unlink(f, dir_fd=fd)
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        os.rmdir(tls)


@atexit.register
def _forget_mine() -> None:
    """At exit, remove what this process registered (a cluster left open dies with it)."""
    for name in list(_mine):
        with contextlib.suppress(Exception):
            unregister(name)


# -- reading --------------------------------------------------------------------------
def _read_private(path: str) -> bytes | None:
    """The content of ``path`` if it is a plain file of ours that others cannot read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o077:
            return None
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read()
    finally:
        os.close(fd)


def _read(path: str) -> Entry | None:
    data = _read_private(path)
    if data is None:
        return None
    try:
        return Entry(**json.loads(data))
    except (ValueError, TypeError):
        return None


def entries() -> list[Entry]:
    """The live clusters of this user, oldest first; dead entries are removed on the way."""
    d = directory()
    found = []
    for fname in sorted(os.listdir(d)):
        if not fname.endswith(".json"):
            continue
        e = _read(os.path.join(d, fname))
        if e is None or fname != f"{e.name}.json":
            continue
        if e.alive():
            found.append(e)
        else:
            _remove(e.name)  # its process is gone (or, in this process, it closed)
    return sorted(found, key=lambda e: e.started)


def lookup(name: str) -> Entry:
    """The live entry ``name``, or a PacklabError that lists the running clusters."""
    check_name(name)
    live = entries()
    for e in live:
        if e.name == name:
            return e
    known = ", ".join(repr(e.name) for e in live) or "none (start one with packlab.launch(name=...))"
    raise PacklabError(f"name={name!r} is not a running cluster of yours: the running ones are {known}.",
                       field="name", value=name)


# -- recent stores --------------------------------------------------------------------
def _stores_file() -> str:
    return os.path.join(private_directory(HOME, "~/.packlab", purpose=PURPOSE), "stores.json")


def record_store(store: str) -> None:
    """Put ``store`` (an absolute path) first in the list of recent stores."""
    path = _stores_file()
    with _lock:
        rows = [r for r in _stores(path) if r["path"] != store]
        rows.insert(0, {"path": store, "used": time.time()})
        atomic_write(path, json.dumps(rows[:RECENT_STORES], indent=1).encode())


def _stores(path: str) -> list[dict[str, Any]]:
    data = _read_private(path)
    try:
        rows = json.loads(data) if data else []
        return [r for r in rows if isinstance(r.get("path"), str)]
    except (ValueError, TypeError, AttributeError):
        return []


def recent_stores() -> list[dict[str, Any]]:
    """The recent stores that still exist, most recent first: ``{"path", "used"}``."""
    return [r for r in _stores(_stores_file()) if os.path.isfile(r["path"])]


def note_queue(cluster_or_client: object, store: str) -> None:
    """A :class:`packlab.JobQueue` opened ``store`` on this cluster: remember both.

    Never fails the queue: a registry that cannot be written is logged and skipped.
    """
    store = os.path.abspath(store)
    try:
        record_store(store)
        name = getattr(cluster_or_client, "name", None)
        if getattr(cluster_or_client, "_registered", False) and isinstance(name, str):
            set_store(name, store)
    except (OSError, PacklabError) as e:
        logger.warning("packlab could not record store %s in ~/.packlab: %s", store, e)
