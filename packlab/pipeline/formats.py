"""Checkpoint formats: one small class per kind of output, found through a registry.

A format writes one stage output into an empty directory and reads it back; it knows
nothing of atomicity or checksums (:mod:`packlab.pipeline.checkpoints` adds those
around every format alike). :func:`format_for` asks the registered formats in order
and takes the first that accepts the object; ``pickle`` accepts anything and comes last.

=========  ==========================================  ==============================
name       accepts                                     on disk
=========  ==========================================  ==============================
zarr       xarray Dataset/DataArray, dask arrays        a zarr store (read back lazily)
parquet    pandas DataFrame/Series with string column  ``data.parquet`` (needs pyarrow
           names                                       or fastparquet)
pickle     anything cloudpickle can pickle             ``data.pkl``
=========  ==========================================  ==============================

Register another with :func:`register_format` (it is asked before the built-in ones), or,
from a package installed beside packlab, through an entry point in the group
``packlab.checkpoint_formats`` (asked after those registered in code, before the built-in
ones).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any, ClassVar

from ..errors import bad_value
from ..plugins import Registry


class Format:
    """The interface of a checkpoint format.

    Examples
    --------
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> Pickle().write({"a": 1}, d)
    >>> Pickle().read(d)
    {'a': 1}
    """

    name: ClassVar[str] = ""

    def accepts(self, obj: Any) -> bool:
        """Whether this format can store ``obj`` (cheap: a type test)."""
        raise NotImplementedError

    def write(self, obj: Any, path: str) -> None:
        """Write ``obj`` into the existing, empty directory ``path``."""
        raise NotImplementedError

    def read(self, path: str) -> Any:
        """Read back what :meth:`write` wrote into ``path``."""
        raise NotImplementedError


class Pickle(Format):
    """Anything cloudpickle can pickle, in one file."""

    name = "pickle"

    def accepts(self, obj: Any) -> bool:
        return True

    def write(self, obj: Any, path: str) -> None:
        import cloudpickle

        with open(os.path.join(path, "data.pkl"), "wb") as f:
            cloudpickle.dump(obj, f, protocol=5)

    def read(self, path: str) -> Any:
        import pickle

        with open(os.path.join(path, "data.pkl"), "rb") as f:
            return pickle.load(f)


class Zarr(Format):
    """xarray objects and dask arrays as a zarr store, computed chunk by chunk as they
    are written (never gathered whole), read back lazily as dask-backed objects.

    Chunks are written uncompressed by default: a checkpoint is written once and read a
    few times, and compressing costs more CPU than the disk time it saves on most data
    (zarr's default zstd ran at a fifth of the disk's speed on incompressible float64 in
    ``benchmarks/bench_pipeline.py``). ``register_format(Zarr(compress=True))`` keeps
    zarr's default compressor.
    """

    name = "zarr"

    def __init__(self, compress: bool = False):
        self.compress = compress

    def _codec(self) -> dict:
        if self.compress:
            return {}
        import zarr

        v2 = int(zarr.__version__.split(".")[0]) < 3
        return {"compressor": None} if v2 else {"compressors": None}

    def accepts(self, obj: Any) -> bool:
        if importlib.util.find_spec("zarr") is None:
            return False
        xr, da = sys.modules.get("xarray"), sys.modules.get("dask.array")  # loaded if obj is one
        return bool((xr is not None and isinstance(obj, (xr.Dataset, xr.DataArray)))
                    or (da is not None and isinstance(obj, da.Array)))

    def write(self, obj: Any, path: str) -> None:
        import dask

        store = os.path.join(path, "data.zarr")
        kind = type(obj).__name__
        with dask.config.set(scheduler="threads"):  # computed here, where the stage ran
            if kind == "Array":
                import dask.array as da

                da.to_zarr(obj, store, **self._codec())
            else:
                ds = obj.to_dataset(name=obj.name if obj.name is not None else "__data__") \
                    if kind == "DataArray" else obj
                codec = self._codec()
                encoding = {v: dict(codec) for v in ds.variables} if codec else None
                ds.to_zarr(store, mode="w-", consolidated=False, encoding=encoding)
        with open(os.path.join(path, "kind"), "w") as f:
            f.write(kind if kind != "DataArray" or obj.name is not None else "DataArray-unnamed")

    def read(self, path: str) -> Any:
        with open(os.path.join(path, "kind")) as f:
            kind = f.read()
        store = os.path.join(path, "data.zarr")
        if kind == "Array":
            import dask.array as da

            return da.from_zarr(store)
        import xarray as xr

        ds = xr.open_zarr(store, consolidated=False)
        if kind.startswith("DataArray"):
            arr = ds[next(iter(ds.data_vars))]
            return arr.rename(None) if kind == "DataArray-unnamed" else arr
        return ds


class Parquet(Format):
    """pandas DataFrames and Series whose column names are strings (parquet's rule)."""

    name = "parquet"

    def accepts(self, obj: Any) -> bool:
        pd = sys.modules.get("pandas")
        if pd is None or not isinstance(obj, (pd.DataFrame, pd.Series)):
            return False
        if not any(importlib.util.find_spec(m) for m in ("pyarrow", "fastparquet")):
            return False
        cols = [obj.name] if isinstance(obj, pd.Series) else list(obj.columns)
        return all(isinstance(c, str) for c in cols)

    def write(self, obj: Any, path: str) -> None:
        import pandas as pd

        series = isinstance(obj, pd.Series)
        (obj.to_frame() if series else obj).to_parquet(os.path.join(path, "data.parquet"))
        with open(os.path.join(path, "kind"), "w") as f:
            f.write("Series" if series else "DataFrame")

    def read(self, path: str) -> Any:
        import pandas as pd

        df = pd.read_parquet(os.path.join(path, "data.parquet"))
        with open(os.path.join(path, "kind")) as f:
            return df.iloc[:, 0] if f.read() == "Series" else df


#: The checkpoint formats, by name (each an instance of a :class:`Format` subclass): the
#: built-in ones register in code, others also through the entry-point group
#: ``packlab.checkpoint_formats`` (an entry point may name a Format subclass, which is
#: instantiated without arguments, or an instance).
FORMATS: Registry[Format] = Registry("checkpoint format", "packlab.checkpoint_formats")
#: The built-in formats, asked last and in this order (``pickle``, which accepts anything, last).
_BUILTIN = (Zarr(), Parquet(), Pickle())
#: The names given to :func:`register_format`, newest (asked first) first.
_ADDED: list[str] = []
for _fmt in _BUILTIN:
    FORMATS.register(_fmt.name, _fmt)
del _fmt


def register_format(fmt: Format) -> None:
    """Add a format, asked before the others (a later registration wins).

    Examples
    --------
    >>> class Text(Format):
    ...     name = "text"
    ...     def accepts(self, obj): return isinstance(obj, str)
    >>> register_format(Text()); format_for("hi").name
    'text'
    >>> unregister_format("text"); format_for("hi").name
    'pickle'
    """
    if not isinstance(fmt, Format) or not fmt.name:
        raise bad_value("format", fmt, "an instance of a packlab.pipeline.formats.Format subclass "
                        "with a name")
    unregister_format(fmt.name)
    FORMATS.register(fmt.name, fmt)
    _ADDED.insert(0, fmt.name)


def unregister_format(name: str) -> None:
    """Remove the format called ``name`` (nothing if there is none)."""
    FORMATS.unregister(name)
    _ADDED[:] = [n for n in _ADDED if n != name]


def _in_order() -> list[str]:
    """The names in the order formats are asked: those given to :func:`register_format`
    (newest first), then those from entry points, then the built-in ones."""
    builtin = [f.name for f in _BUILTIN]
    found = [n for n in FORMATS if n not in _ADDED and n not in builtin]
    return [*_ADDED, *found, *(n for n in builtin if n not in _ADDED and n in FORMATS)]


def _format(name: str) -> Format:
    fmt = FORMATS[name]
    if isinstance(fmt, type) and issubclass(fmt, Format):  # an entry point naming the class
        fmt = fmt()
        FORMATS.register(name, fmt)
    if not isinstance(fmt, Format):
        raise bad_value(f"{FORMATS.group}:{name}", fmt, "a packlab.pipeline.formats.Format "
                        "subclass or an instance of one", "Fix or uninstall the package that provides it.")
    return fmt


def format_for(obj: Any) -> Format:
    """The first registered format that accepts ``obj``."""
    return next(f for f in map(_format, _in_order()) if f.accepts(obj))


def get_format(name: str) -> Format | None:
    """The format called ``name``, or ``None`` (a checkpoint of an unknown format is foreign)."""
    return _format(name) if isinstance(name, str) and name in FORMATS else None
