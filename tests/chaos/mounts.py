"""Small real filesystems for chaos tests (we run as root): a tmpfs of a given size that a
filler file makes full, and a loop-mounted ext4 image that the kernel turns read-only on
an error (``errors=remount-ro``), as it does a real disk's. Unmounted however the test ends.

Where nothing can be mounted (no root, no loop devices) the tests skip loudly, and fail
under ``CI=true``, as the SLURM tests do (tests/conftest.py).

Why not ``mount -o remount,ro`` mid-run: Linux refuses it (EBUSY) while any file of the
filesystem is open for writing, and a live store always is; ext4 turning itself read-only
on an error is how a store really finds itself on a read-only filesystem. Such a
filesystem stays read-only until it is mounted afresh (``mount -o remount,rw`` is refused
with "emergency_ro"), which needs every file on it closed: the queue and its cluster.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

from support import skip_or_fail_in_ci


def _sh(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def require(reason: str | None) -> None:
    """Skip loudly (fail under CI=true) when ``reason`` says mounting is impossible."""
    skip_or_fail_in_ci(reason, "cannot mount test filesystems in CI (these tests must run there)",
                       "MOUNT TESTS SKIPPED")


@functools.cache
def cannot_mount(kind: str) -> str | None:
    """None when a ``kind`` ("tmpfs" or "ext4") filesystem can be mounted here, else why not."""
    if os.geteuid() != 0:
        return "not root"
    need = ["mount", "umount"] + (["mkfs.ext4", "e2fsck"] if kind == "ext4" else [])
    missing = [c for c in need if shutil.which(c) is None]
    if missing:
        return f"{', '.join(missing)} not on PATH"
    try:
        with (tmpfs("1m") if kind == "tmpfs" else ext4("8m")) as fs:
            if kind == "ext4" and not os.path.exists(fs.trigger):
                return f"{fs.trigger} is missing (no ext4 error injection in this kernel)"
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        return f"mounting a {kind} failed: {e}"
    return None


def umount(path: str) -> None:
    """Unmount ``path``; lazily if something still holds it open (a failed test's process)."""
    r = _sh("umount", path)
    if r.returncode != 0 and "not mounted" not in r.stderr:
        _sh("umount", "-l", path)


@contextlib.contextmanager
def tmpfs(size: str) -> Iterator[str]:
    """A tmpfs of ``size`` (e.g. "12m") mounted on a new private folder; its path."""
    d = tempfile.mkdtemp(prefix="packlab-chaos-tmpfs-")
    try:
        r = _sh("mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", d)
        if r.returncode != 0:
            raise RuntimeError(r.stderr.strip())
        try:
            yield d
        finally:
            umount(d)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(d)


class Ext4:
    """A loop-mounted ext4 image at ``path`` (``errors=remount-ro``)."""

    def __init__(self, image: str, path: str) -> None:
        self.image, self.path = image, path
        self.trigger = ""
        self.mount()

    def mount(self) -> None:
        r = _sh("mount", "-o", "loop,errors=remount-ro", self.image, self.path)
        if r.returncode != 0:
            raise RuntimeError(r.stderr.strip())
        dev = _sh("findmnt", "-no", "SOURCE", self.path).stdout.strip()
        self.trigger = f"/sys/fs/ext4/{os.path.basename(dev)}/trigger_fs_error"

    def fail(self) -> None:
        """An ext4 error now: the kernel turns the filesystem read-only, as on a disk error."""
        with open(self.trigger, "w") as f:
            f.write("packlab chaos test\n")

    def remount(self) -> None:
        """Mount it afresh, read-write, after fsck (every file on it must be closed)."""
        r = _sh("umount", self.path)
        if r.returncode != 0:
            raise RuntimeError(f"umount {self.path}: {r.stderr.strip()} (is the store still open?)")
        fsck = _sh("e2fsck", "-fy", self.image)
        if fsck.returncode not in (0, 1):  # 1: errors corrected
            raise RuntimeError(f"e2fsck {self.image} exited {fsck.returncode}: {fsck.stdout}{fsck.stderr}")
        self.mount()


@contextlib.contextmanager
def ext4(size: str) -> Iterator[Ext4]:
    """An ext4 image of ``size`` (e.g. "32m", journal on) loop-mounted on a new folder."""
    d = tempfile.mkdtemp(prefix="packlab-chaos-ext4-")
    image = d + ".img"
    try:
        with open(image, "wb") as f:
            f.truncate(int(size[:-1]) << 20)
        r = _sh("mkfs.ext4", "-q", "-F", image)
        if r.returncode != 0:
            raise RuntimeError(r.stderr.strip())
        fs = Ext4(image, d)
        try:
            yield fs
        finally:
            umount(d)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(d)
        with contextlib.suppress(OSError):
            os.remove(image)


def fill(folder: str) -> str:
    """Write a filler file in ``folder`` until its filesystem is full (ENOSPC); its path."""
    path = os.path.join(folder, "filler")
    block = b"\0" * (1 << 16)
    with open(path, "wb", buffering=0) as f:  # unbuffered: close() has nothing left to write
        try:
            while True:
                f.write(block)
        except OSError:  # ENOSPC: full
            pass
    return path
