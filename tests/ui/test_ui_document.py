"""packlab.ui.document: the Bokeh document JupyterLab's packlab tab serves, on a real store."""

from __future__ import annotations

import os

import pytest
from bokeh.document import Document

import packlab
from packlab.ui.document import document, read_counts


def _div(doc: Document, css: str):
    (div,) = [m for m in doc.models if css in (getattr(m, "css_classes", None) or [])]
    return div


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_document_draws_a_real_stores_counts(tmp_path, home):
    """A store without telemetry (a cluster launched with telemetry=False): the counts view."""
    store = str(tmp_path / "q.db")
    with packlab.launch(workers=1, cores=1, memory="1GiB", telemetry=False, wait=True) as pc, \
            packlab.JobQueue(pc, store=store) as q:
        q.wait([q.submit(abs, -i) for i in range(3)], timeout=60)
        q.flush()
    assert read_counts(store) == {"done": 3}
    doc = Document()
    document(doc)  # no store given: the one the queue recorded last
    assert doc.title == "packlab panel"
    assert '"value">3<' in _div(doc, "packlab-done").text
    assert '"value">0<' in _div(doc, "packlab-depth").text
    assert "q.db" in _div(doc, "packlab-title").text and store in _div(doc, "packlab-title").text


def test_document_of_a_store_not_written_yet_says_so(tmp_path, home):
    path = str(tmp_path / "later.db")
    doc = Document()
    document(doc, store=path)
    assert f"no queue store at {path} yet" in _div(doc, "packlab-title").text
    assert not os.path.exists(path)  # read-only: never creates it
