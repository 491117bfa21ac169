"""The price of a worker has one definition (``pricing.TERMS``): its Python form
(``Pricing.hourly``) and its SQL form (``pricing.rate_sql``, what the monitor's queries
run) agree on any prices, sizes and markets."""

from __future__ import annotations

import math
import sqlite3

from hypothesis import given, settings
from hypothesis import strategies as st

from packlab.telemetry.pricing import MARKETS, Pricing, rate_sql

# the columns of telemetry's tel_workers table that a price reads
TEL_WORKERS = ("CREATE TABLE tel_workers (cluster TEXT, worker TEXT, start REAL, stop REAL, seen REAL, "
               "cores INTEGER, threads INTEGER, memory INTEGER, gpus INTEGER DEFAULT 0, "
               "market TEXT DEFAULT 'on-demand', busy REAL DEFAULT 0)")

prices = st.floats(0, 1e4, allow_nan=False, allow_infinity=False)
discounts = st.floats(0, 0.99, allow_nan=False, allow_infinity=False)
pricings = st.builds(Pricing, core_hour=prices, gb_hour=prices, gpu_hour=prices, spot_discount=discounts,
                     reserved_discount=discounts)
workers = st.lists(st.tuples(st.integers(0, 512), st.integers(0, 2**42), st.integers(0, 16),
                             st.sampled_from(MARKETS)), min_size=1, max_size=8)


@settings(max_examples=200, deadline=None)
@given(pricings, workers)
def test_the_python_and_sql_forms_of_a_price_agree(p, rows):
    con = sqlite3.connect(":memory:")
    con.execute(TEL_WORKERS)
    con.executemany("INSERT INTO tel_workers (cluster, worker, threads, memory, gpus, market) "
                    "VALUES ('c', ?, ?, ?, ?, ?)", [(f"w{i}", *r) for i, r in enumerate(rows)])
    sql, params = rate_sql(p)
    got = dict(con.execute(f"SELECT w.worker, {sql} * 3600 FROM tel_workers w", params).fetchall())
    for i, (threads, memory, gpus, market) in enumerate(rows):
        want = p.hourly(cores=threads, memory=memory, gpus=gpus, market=market)
        assert math.isclose(got[f"w{i}"], want, rel_tol=1e-9, abs_tol=1e-9), (threads, memory, gpus, market)
    # and summed over the workers, as the monitor's queries aggregate them
    total = con.execute(f"SELECT SUM({sql} * 3600) FROM tel_workers w", params).fetchone()[0]
    want = math.fsum(p.hourly(cores=t, memory=m, gpus=g, market=k) for t, m, g, k in rows)
    assert math.isclose(total, want, rel_tol=1e-9, abs_tol=1e-9)


def test_the_sql_form_names_its_alias():
    sql, params = rate_sql(Pricing(core_hour=1.0), alias="x")
    assert "x.threads" in sql and "w." not in sql and len(params) == sql.count("?")
