"""File safety for everything packlab writes: private folders and files, atomic writes,
opening without following links, and whether a process is alive.

On a shared login node every other user of the machine can plant a symbolic link where
packlab is about to write (``/tmp/x -> ~victim/.ssh``). So what packlab creates is owner
only (folders 0700, files 0600), a link is never followed where someone else could have
planted it, and a file is replaced whole (a reader never sees half of it).

Every module that writes a file of its own uses these helpers; none imports a helper of
another package for it. A refusal is an :class:`UnsafePath`: its fields say which path,
what is wrong with it (``problem``) and which setting named it (``field``), and its
message is composed from the caller's ``purpose`` (what packlab keeps there), so a
checkpoint folder is refused in words about checkpoints, a TLS folder in words about
keys, without a caller parsing another's message apart.

Examples
--------
>>> import tempfile
>>> p = os.path.join(tempfile.mkdtemp(), "f.json")
>>> atomic_write(p, b"{}"); oct(os.stat(p).st_mode & 0o777)
'0o600'
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import uuid

from .errors import PacklabError

#: What :func:`private_directory` says it protects when a caller does not say.
DEFAULT_PURPOSE = "packlab writes its own files there"


class UnsafePath(PacklabError):
    """A path packlab will not write through: a link someone could have planted, another
    user's folder, not a folder.

    ``path`` is the absolute path, ``problem`` what is wrong with it in a few words
    (``"a symbolic link, or passes through one ('x')"``), ``field`` the argument or
    setting that named it. ``str(e)`` is the whole message, fix included.
    """

    def __init__(self, message: str, *, field: str | None, path: str, problem: str) -> None:
        super().__init__(message, field=field, value=path)
        self.path = path
        self.problem = problem


def _unsafe(path: str, field: str, problem: str, purpose: str, fix: str) -> UnsafePath:
    return UnsafePath(f"{field}={path!r} is {problem}: {purpose} and never through a link someone else "
                      f"could have planted. {fix}", field=field, path=path, problem=problem)


def private_directory(path: str | os.PathLike, field: str, *, purpose: str = DEFAULT_PURPOSE,
                      fix: str = "Remove it, or set the setting to a directory of yours.") -> str:
    """Create ``path`` (and missing parents) owner-only (0700); refuse a link or another owner.

    The path is walked one component at a time, each opened without following a symbolic
    link (``O_NOFOLLOW`` relative to its parent's descriptor) and each missing one created
    there, so no link planted anywhere along the path is followed: an ancestor that is a
    link is followed only when the link is root's or yours and sits in a directory that
    others cannot write to (e.g. a system's ``/var -> /private/var``). The last component
    is never a link. An existing directory of ours that others may read is tightened to
    0700; a directory of another user is an :class:`UnsafePath`.

    ``purpose`` says what packlab keeps there (it is the reason given in a refusal) and
    ``fix`` what the user can do about it. Returns the absolute path.

    Examples
    --------
    >>> import tempfile
    >>> d = private_directory(os.path.join(tempfile.mkdtemp(), "a", "b"), "dir")
    >>> oct(os.stat(d).st_mode & 0o777)
    '0o700'
    >>> os.symlink(d, d + "-link")
    >>> private_directory(d + "-link", "dir", purpose="packlab keeps checkpoints there")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    packlab.files.UnsafePath: dir='...-link' is a symbolic link, ...: packlab keeps checkpoints there ...
    """
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    fd = _open_private(path, field, purpose, fix)
    try:
        st = os.fstat(fd)
        if st.st_uid != os.getuid():
            problem = f"owned by uid {st.st_uid}, not by you (uid {os.getuid()})"
            raise UnsafePath(f"{field}={path!r} belongs to uid {st.st_uid}, not to you (uid {os.getuid()}); "
                             f"{purpose}, so it must be yours. Use a directory of your own.",
                             field=field, path=path, problem=problem)
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
    return path


_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


def _open_private(path: str, field: str, purpose: str, fix: str) -> int:
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
                try:
                    child = os.open(name, _DIR, dir_fd=fd)
                except OSError:
                    _trusted_link(name, fd, path, field, True, purpose, fix)  # raises: never follow it now
                    raise  # pragma: no cover
            except OSError:
                target = _trusted_link(name, fd, path, field, last, purpose, fix)
                hops += 1
                if hops > 40:
                    raise _unsafe(path, field, "a loop of symbolic links", purpose, fix) from None
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


def _trusted_link(name: str, parent: int, path: str, field: str, last: bool, purpose: str, fix: str) -> str:
    """The target of the link ``name`` in ``parent`` if it may be followed, else an error."""
    try:
        st = os.lstat(name, dir_fd=parent)
    except OSError as e:
        raise _unsafe(path, field, f"not a directory we can open ({e.strerror})", purpose, fix) from None
    if not stat.S_ISLNK(st.st_mode):
        raise _unsafe(path, field, f"not a directory we can open ({name!r} is not a directory)", purpose, fix)
    where = os.fstat(parent)
    open_to_others = stat.S_IMODE(where.st_mode) & 0o022 and not where.st_mode & stat.S_ISVTX
    if last or st.st_uid not in (0, os.getuid()) or open_to_others:
        owner = "" if st.st_uid == os.getuid() else f", owned by uid {st.st_uid}"
        raise _unsafe(path, field, f"a symbolic link, or passes through one ({name!r}{owner})", purpose, fix)
    return os.readlink(name, dir_fd=parent)


def create_private_file(path: str) -> None:
    """Create ``path`` empty and owner-only (0600), refusing a symbolic link planted there.
    An existing empty file (e.g. made with ``touch``) is made owner-only instead.

    Examples
    --------
    >>> import tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "f")
    >>> create_private_file(p); oct(os.stat(p).st_mode & 0o777)
    '0o600'
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
        try:
            if os.fstat(fd).st_size == 0:
                os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        return
    os.close(fd)


def open_new_private(path: str) -> int:
    """A write descriptor of the new file ``path`` (0600); never through a link, never an
    existing file (``O_EXCL``)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)


def temporary_name(path: str) -> str:
    """A name beside ``path`` unique to this call (process, thread and a random part)."""
    return f"{path}.{os.getpid()}.{threading.get_ident()}.{uuid.uuid4().hex[:8]}.tmp"


def atomic_write(path: str, data: bytes | None = None, *, write=None, durable: bool = False) -> None:
    """Replace ``path`` whole with an owner-only (0600) file: a reader sees the old file or
    the new one, never half. The content is ``data``, or what ``write(fileobj)`` writes.

    ``durable`` also fsyncs the file and its folder, so the new content survives a power
    loss once this returns (checkpoints); without it the rename is still atomic against
    other processes (registry entries, keys). The temporary file beside ``path`` is
    removed when anything fails.

    Examples
    --------
    >>> import tempfile, json
    >>> p = os.path.join(tempfile.mkdtemp(), "x.json")
    >>> atomic_write(p, write=lambda f: f.write(json.dumps({"a": 1}).encode()), durable=True)
    >>> open(p).read()
    '{"a": 1}'
    """
    if (data is None) == (write is None):
        raise TypeError("atomic_write needs exactly one of data= and write=")
    tmp = temporary_name(path)
    try:
        with os.fdopen(open_new_private(tmp), "wb") as f:
            if data is not None:
                f.write(data)
            else:
                write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    if durable:
        fsync_directory(os.path.dirname(os.path.abspath(path)))


def fsync_directory(path: str) -> None:
    """fsync the folder ``path`` (so a rename in it is durable)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host is alive (a zombie, killed but not yet
    reaped by its parent, is not).

    Examples
    --------
    >>> pid_alive(os.getpid())
    True
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:  # no /proc (macOS): os.kill said it exists
        return True


__all__ = ["UnsafePath", "atomic_write", "create_private_file", "fsync_directory", "open_new_private",
           "pid_alive", "private_directory", "temporary_name"]
