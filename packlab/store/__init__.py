"""The SQLite file that the queue and telemetry share: one connection policy, one
transaction block, one way to recognise, create and open a store, and one classifier of
store failures.

Each package that keeps tables in a store describes them as a :class:`Schema` and
registers it (the queue in :mod:`packlab.queue.schema`, telemetry in
:mod:`packlab.telemetry.tables`); this layer knows no table of theirs. It sits just above
the foundation (:mod:`packlab.errors`, :mod:`packlab.files`) and imports nothing else of
packlab.
"""

from . import failures
from .opening import NOT_A_STORE_FIX, create_whole, identify, open_store, refuse, remove_store
from .schemas import APPLICATION_ID, Schema, migrate, missing_columns, register, registered
from .sqlite import connect, store_path, transaction

__all__ = ["APPLICATION_ID", "NOT_A_STORE_FIX", "Schema", "connect", "create_whole", "failures", "identify",
           "migrate", "missing_columns", "open_store", "refuse", "register", "registered", "remove_store",
           "store_path", "transaction"]
