"""The checkpoint store: each stage output written atomically, with a manifest checked on read.

Layout under the pipeline's checkpoint directory (owner-only, 0700)::

    outputs/<stage>/<key>/manifest.json   what was written: every file, its size and checksum
    outputs/<stage>/<key>/...             the format's files (data.pkl, data.zarr/, ...)
    tmp/                                  outputs being written, and old ones being removed
    ctx/<stage>/<key>.pkl                 in-stage saved state (see context.py)

Guarantees
----------
* A checkpoint is whole or absent: the output is written under ``tmp/``, every file is
  fsynced, the manifest (written last, fsynced) lists every file with its size and checksum
  (CRC-32C where ``google-crc32c`` is installed, as zarr 3 has it, else zlib's CRC-32),
  and only then is the directory renamed to its place (and the parent fsynced). A crash at
  any point leaves at most an orphan in ``tmp/``, never read, which ``Pipeline.clean()``
  removes (a writer elsewhere may still be finishing its own, so a run does not).
* A checkpoint is used only after :meth:`CheckpointStore.check` found it valid: the
  manifest parses, names this pipeline, stage, key and a known format, and every file it
  lists is there with its size and checksum. A zarr chunk deleted (which zarr would read
  back as the fill value), a truncated file, a byte changed, a foreign or half-copied
  directory: each is reported with its reason and the stage is recomputed.

Checking reads every byte (the CRC runs at several GB/s, above disk speed); that is the
price of never using a torn output.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import time
import uuid
import zlib
from dataclasses import dataclass
from typing import Any

from ..errors import PacklabError
from ..files import UnsafePath, fsync_directory, private_directory
from .formats import Pickle, format_for, get_format

MANIFEST = "manifest.json"
log = logging.getLogger("packlab.pipeline")
_BLOCK = 1 << 22


class CheckpointInvalid(Exception):
    """A checkpoint is missing, partial, corrupt or foreign; ``reason`` says which."""

    def __init__(self, stage: str, key: str, reason: str):
        super().__init__(f"checkpoint of stage {stage!r} ({key}): {reason}")
        self.stage, self.key, self.reason = stage, key, reason


class OutputNotSerializable(PacklabError):
    """A stage returned an object no checkpoint format could write: permanent (not retried)."""


class CheckpointRefused(PacklabError):
    """A directory of the checkpoint store is a symbolic link (or not ours): permanent."""


#: Why a checkpoint folder must be private (the reason a refusal gives).
CHECKPOINT_PURPOSE = "packlab writes checkpoints (your data) there"


def private_subdir(path: str) -> str:
    """``path``, a directory of the checkpoint store, created owner-only (0700) if missing
    and never reached through a link planted there (see :func:`packlab.files.private_directory`)."""
    try:
        return private_directory(path, "checkpoint", purpose=CHECKPOINT_PURPOSE)
    except UnsafePath as e:
        raise CheckpointRefused(f"checkpoint={e.path!r} is {e.problem}: {CHECKPOINT_PURPOSE} and never "
                                "through a link. Remove it and run the pipeline again.",
                                field="checkpoint", value=path) from None


def _links(path: str) -> str | None:
    """The first symbolic link at or under ``path`` (relative), or None."""
    if os.path.islink(path):
        return "."
    for d, dirs, files in os.walk(path):
        for name in dirs + files:
            if os.path.islink(os.path.join(d, name)):
                return os.path.relpath(os.path.join(d, name), path)
    return None


@dataclass
class Written:
    """What :meth:`CheckpointStore.write` wrote."""

    format: str
    nbytes: int
    files: int


def _crc32(data: bytes, crc: int) -> int:
    return zlib.crc32(data, crc)


def _crc32c(data: bytes, crc: int) -> int:
    import google_crc32c  # zarr 3 depends on it: hardware CRC-32C, 3x zlib's CRC-32 here

    return google_crc32c.extend(crc, data)


#: Checksums by the name the manifest records; the first one available is used for writing.
_CHECKSUMS = {"crc32c": _crc32c, "crc32": _crc32}


def _writing_checksum() -> str:
    return "crc32c" if importlib.util.find_spec("google_crc32c") is not None else "crc32"


def _digest(path: str, algorithm: str, fsync: bool = False) -> tuple[int, int]:
    """Size and checksum of a file (fsynced too with ``fsync``: its bytes are in the page
    cache already, so one pass serves both)."""
    update = _CHECKSUMS[algorithm]
    crc, size = 0, 0
    with open(path, "rb", buffering=0) as f:
        while b := f.read(_BLOCK):
            crc = update(b, crc)
            size += len(b)
        if fsync:
            os.fsync(f.fileno())
    return size, crc


def _walk(root: str) -> list[str]:
    """Every file under ``root``, as relative paths; directories fsynced on the way."""
    out = []
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            out.append(os.path.relpath(os.path.join(d, name), root))
        fsync_directory(d)
    return out


class CheckpointStore:
    """Atomic, verified outputs of one pipeline's stages under ``root``.

    Examples
    --------
    >>> import tempfile
    >>> s = CheckpointStore(tempfile.mkdtemp(), "etl")
    >>> s.write("load", "k1", [1, 2, 3]).format
    'pickle'
    >>> s.check("load", "k1") is None, s.read("load", "k1")
    (True, [1, 2, 3])
    >>> s.check("load", "k2")
    'missing'
    """

    def __init__(self, root: str, pipeline: str):
        self.root = root
        self.pipeline = pipeline

    def path(self, stage: str, key: str) -> str:
        return os.path.join(self.root, "outputs", stage, key)

    def write(self, stage: str, key: str, obj: Any, meta: dict | None = None) -> Written:
        """Write ``obj`` as the checkpoint of ``stage`` at ``key``, atomically."""
        tmp_root = private_subdir(os.path.join(self.root, "tmp"))
        tmp = os.path.join(tmp_root, f"{stage}.{key}.{uuid.uuid4().hex[:8]}")
        os.mkdir(tmp, 0o700)
        try:
            fmt = self._write_data(stage, obj, tmp)
            files, nbytes, algorithm = {}, 0, _writing_checksum()
            for rel in _walk(tmp):
                size, crc = _digest(os.path.join(tmp, rel), algorithm, fsync=True)
                files[rel] = [size, crc]
                nbytes += size
            t = type(obj)
            manifest = {"packlab-checkpoint": 1, "pipeline": self.pipeline, "stage": stage, "key": key,
                        "format": fmt, "type": f"{t.__module__}.{t.__qualname__}", "written": time.time(),
                        "checksum": algorithm, "files": files, "meta": meta or {}}
            with open(os.path.join(tmp, MANIFEST), "w") as f:
                json.dump(manifest, f)
                f.flush()
                os.fsync(f.fileno())
            fsync_directory(tmp)
            self._publish(stage, key, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return Written(fmt, nbytes, len(files))

    def _write_data(self, stage: str, obj: Any, tmp: str) -> str:
        # An OSError is the filesystem's (full, read-only, I/O), not the output's: it is
        # raised as it is (the attempt fails and is retried), never taken for an output no
        # format can write, which is permanent.
        fmt = format_for(obj)
        if not isinstance(fmt, Pickle):
            try:
                fmt.write(obj, tmp)
                return fmt.name
            except OSError:
                raise
            except Exception as e:  # e.g. a frame parquet cannot type: pickled instead
                log.warning("stage %s: the %s format refused its output (%s: %s); pickling it instead",
                            stage, fmt.name, type(e).__name__, e)
                for name in os.listdir(tmp):
                    p = os.path.join(tmp, name)
                    shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
        try:
            Pickle().write(obj, tmp)
        except OSError:
            raise
        except Exception as e:
            t = type(obj)
            raise OutputNotSerializable(
                f"stage {stage!r} returned a {t.__module__}.{t.__qualname__}, which cannot be "
                f"checkpointed ({type(e).__name__}: {e}). Return data (arrays, frames, plain Python "
                "values), or register a packlab.pipeline.formats.Format for this type.",
                field="stage", value=stage) from None
        return "pickle"

    def _publish(self, stage: str, key: str, tmp: str) -> None:
        final = self.path(stage, key)
        parent = private_subdir(os.path.dirname(final))
        if os.path.lexists(final):  # an invalid one (or a twin attempt's): moved aside first
            if self.check(stage, key) is None:
                shutil.rmtree(tmp, ignore_errors=True)  # a valid twin is there: keep it
                return
            trash = os.path.join(self.root, "tmp", f"old.{uuid.uuid4().hex[:8]}")
            os.rename(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:  # a twin attempt published in between: its output is as good
            if self.check(stage, key) is not None:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
        fsync_directory(parent)

    def check(self, stage: str, key: str) -> str | None:
        """``None`` if the checkpoint is valid, else why not (``"missing"`` when absent)."""
        path = self.path(stage, key)
        link = _links(path)  # never read through one: it could point at anyone's files
        if link is not None:
            where = "it is" if link == "." else f"{link} is"
            return f"{where} a symbolic link (packlab never follows one in its checkpoints)"
        try:
            with open(os.path.join(path, MANIFEST), "rb") as f:
                m = json.loads(f.read())
        except FileNotFoundError:
            return "missing" if not os.path.lexists(path) else "no manifest (a partial or foreign directory)"
        except (OSError, ValueError) as e:
            return f"unreadable manifest ({type(e).__name__})"
        if not isinstance(m, dict) or m.get("packlab-checkpoint") != 1:
            return "not a packlab checkpoint manifest"
        for field, want in (("pipeline", self.pipeline), ("stage", stage), ("key", key)):
            if m.get(field) != want:
                return f"foreign: manifest {field}={m.get(field)!r}, expected {want!r}"
        if get_format(m.get("format")) is None:
            return f"unknown format {m.get('format')!r}"
        files = m.get("files")
        if not isinstance(files, dict) or not files:
            return "manifest lists no files"
        algorithm = m.get("checksum", "crc32")
        if algorithm not in _CHECKSUMS:
            return f"unknown checksum {algorithm!r}"
        if algorithm == "crc32c" and importlib.util.find_spec("google_crc32c") is None:
            return "written with CRC-32C, which cannot be checked here (install google-crc32c)"
        for rel, entry in files.items():
            p = os.path.join(path, rel)
            if os.path.isabs(rel) or ".." in rel.split("/"):
                return f"manifest names a file outside the checkpoint: {rel!r}"
            try:
                size = os.path.getsize(p)
            except OSError:
                return f"file {rel} is missing"
            if size != entry[0]:
                return f"file {rel} has {size} bytes, the manifest says {entry[0]} (truncated or rewritten)"
            if _digest(p, algorithm)[1] != entry[1]:
                return f"file {rel} fails its checksum (corrupted)"
        return None

    def manifest(self, stage: str, key: str) -> dict:
        with open(os.path.join(self.path(stage, key), MANIFEST)) as f:
            return json.load(f)

    def read(self, stage: str, key: str, *, checked: bool = False) -> Any:
        """The output of ``stage`` at ``key``; raises :class:`CheckpointInvalid` unless it
        is valid (``checked=True``: the caller just checked it)."""
        if not checked:
            reason = self.check(stage, key)
            if reason is not None:
                raise CheckpointInvalid(stage, key, reason)
        fmt = get_format(self.manifest(stage, key)["format"])
        return fmt.read(self.path(stage, key))

    def clean_tmp(self) -> None:
        """Remove what crashed writers left in ``tmp/`` (call when no stage runs)."""
        shutil.rmtree(os.path.join(self.root, "tmp"), ignore_errors=True)
