"""Jobs carry tags stored with them (``submit(tags=)``, ``Job.tags``): how a pipeline marks
its stage jobs, so that telemetry groups them without parsing job names. A store made
before tags existed is read (no tags) and migrated (column and index) on open."""

from __future__ import annotations

import sqlite3

import pytest

from packlab.errors import PacklabError
from packlab.queue import Store
from packlab.queue.job import Job, check_tags


def test_tags_round_trip_through_the_store(tmp_path):
    path = str(tmp_path / "q.db")
    s = Store(path)
    s.insert(Job("a", 0, "m.f", b"", tags={"stage": "clean", "pipeline": "etl"}))
    s.insert(Job("b", 1, "m.f", b""))
    s.flush()
    s.close()
    (stored,) = sqlite3.connect(path).execute("SELECT tags FROM jobs WHERE id='a'").fetchone()
    assert stored == '{"pipeline":"etl","stage":"clean"}'  # canonical: equal tags group in SQL
    reader = Store(path, mode="ro")
    try:
        jobs = {j.id: j for j in reader.unfinished()}
    finally:
        reader.close()
    assert jobs["a"].tags == {"pipeline": "etl", "stage": "clean"} and jobs["b"].tags is None


def test_a_store_made_before_tags_is_read_then_migrated(tmp_path):
    path = str(tmp_path / "q.db")
    s = Store(path)
    s.insert(Job("a", 0, "m.f", b""))
    s.flush()
    s.close()
    con = sqlite3.connect(path)
    con.execute("DROP INDEX jobs_tags")
    con.execute("ALTER TABLE jobs DROP COLUMN tags")  # the schema of an earlier packlab
    con.commit()
    con.close()

    reader = Store(path, mode="ro")  # a reader may not migrate: it reads no tags
    try:
        assert [(j.id, j.tags) for j in reader.unfinished()] == [("a", None)]
    finally:
        reader.close()
    Store(path).close()  # a writer migrates: the column, then the index on it
    con = sqlite3.connect(path)
    assert "tags" in [r[1] for r in con.execute("PRAGMA table_info(jobs)")]
    assert con.execute("SELECT 1 FROM sqlite_master WHERE name='jobs_tags'").fetchone() == (1,)


@pytest.mark.parametrize("bad", [{"stage": 3}, ["pipeline"], {"": "x"}, "etl"])
def test_tags_that_are_not_strings_to_strings_are_refused(bad):
    with pytest.raises(PacklabError, match=r"tags=.* is invalid: expected a dict of strings to strings"):
        check_tags(bad)
