"""The panel in a real browser: the dashboard renders every plot, its counters advance over
the websocket while a workload runs, a request without the token is refused when bound
elsewhere, the report renders with the network blocked. Screenshots: artifacts/screenshots/."""

from __future__ import annotations

import subprocess
import sys

from browser_support import HERE, SHOTS, wait_for_telemetry

PLOTS = 6
CANVASES = "document.querySelectorAll('*').length && (function(){let n=0;const walk=(r)=>{for(const e of " \
           "r.querySelectorAll('*')){if(e.tagName==='CANVAS')n++;if(e.shadowRoot)walk(e.shadowRoot);}};" \
           "walk(document);return n;})()"


def canvases(page) -> int:
    return page.evaluate(CANVASES)


def card(page, label: str) -> str:
    """The value of the top-row card ``label`` (Playwright's CSS pierces Bokeh's shadow DOM)."""
    tile = page.locator(".plc", has=page.locator(".pll", has_text=label))
    return tile.locator(".plv").inner_text()


def plot_titles(page) -> list[str]:
    return page.evaluate("""() => { const d = Bokeh.documents[0]; const ms = d._all_models ?
        [...d._all_models.values()] : [...d.all_models]; return ms.filter(m => m.type === 'Title' ||
        (m.constructor && m.constructor.__name__ === 'Title')).map(m => m.text); }""")


def wait_rendered(page) -> None:
    page.wait_for_function(f"({CANVASES}) >= {PLOTS}", timeout=60_000)
    page.locator(".plc").first.wait_for(timeout=60_000)


def test_dashboard_renders_every_plot(page, run_store, dashboard):
    d = dashboard(run_store)
    assert d.url == d.local  # loopback: no token
    page.goto(d.url)
    wait_rendered(page)
    assert canvases(page) >= PLOTS
    titles = plot_titles(page)  # drawn on the canvas: read them from BokehJS's document
    for title in ("Queue depth by priority class", "Worker health", "Utilisation", "Job duration",
                  "Failure rate", "Cost per job"):
        assert any(t.startswith(title) for t in titles), (title, titles)
    assert card(page, "Workers") == "2 stopped"
    page.wait_for_timeout(500)
    page.screenshot(path=str(SHOTS / "dashboard-history.png"), full_page=True)
    assert page.errors == []


def test_dashboard_counters_advance_over_the_websocket(page, tmp_path, dashboard):
    store = str(tmp_path / "live.db")
    work = subprocess.Popen([sys.executable, str(HERE / "workload.py"), store, "25"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_telemetry(store, work)
        d = dashboard(store)
        page.goto(d.url)
        wait_rendered(page)
        first = int(card(page, "Jobs completed today").replace(",", ""))
        # the page is never reloaded: a higher count can only come over the websocket
        for _ in range(240):  # poll the page (never reloaded) for up to 2 minutes
            if int(card(page, "Jobs completed today").replace(",", "")) > first + 10:
                break
            page.wait_for_timeout(500)
        assert int(card(page, "Jobs completed today").replace(",", "")) > first + 10
        page.wait_for_timeout(1500)
        page.screenshot(path=str(SHOTS / "dashboard-live.png"), full_page=True)
        assert page.errors == []
    finally:
        work.terminate()
        work.wait(60)


def test_dashboard_elsewhere_refuses_a_request_without_the_token(page, run_store, dashboard):
    d = dashboard(run_store, "--address", "0.0.0.0")
    assert "?token=" in d.url
    r = page.goto(d.local)
    assert r.status == 403
    page.screenshot(path=str(SHOTS / "dashboard-refused.png"))
    r = page.goto(d.local + "?token=" + d.url.split("?token=")[1])
    assert r.status == 200
    wait_rendered(page)  # the websocket got in with the cookie the page set
    assert card(page, "Workers") == "2 stopped"


def test_report_renders_offline(page, run_store, tmp_path):
    out = tmp_path / "report.html"
    subprocess.run([sys.executable, "-m", "packlab.cli", "report", "--store", run_store, "-o", str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    asked: list[str] = []

    def block(route):
        asked.append(route.request.url)
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            route.abort()

    page.route("**/*", block)
    page.goto(out.as_uri())
    wait_rendered(page)
    assert [u for u in asked if not u.startswith("file://")] == []
    assert card(page, "Failure rate").endswith("%")
    page.screenshot(path=str(SHOTS / "report-offline.png"), full_page=True)
    assert page.errors == []
