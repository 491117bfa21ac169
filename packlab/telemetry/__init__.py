"""Telemetry: what a pack run costs, how it behaves, and what to change.

This package is the pure logic: prices and cost attribution (:mod:`.pricing`), alert
rules and their sinks (:mod:`.alerts`), the advisor's findings and right-sizing
(:mod:`.advisor`), and bounded series with their downsampling (:mod:`.series`). Each is a
function of plain records, so it is tested without a cluster. Around them: the scheduler
plugin and the recorders that collect (:mod:`.plugin`, :mod:`.collect`, :mod:`.accounting`;
these import distributed), telemetry's tables in a packlab store (:mod:`.tables`), and what
reads them (:mod:`.monitor`, :mod:`.queries`, :mod:`.summary`, :mod:`.textreport`).
Telemetry joins a cluster and a queue through :mod:`packlab.hooks`; neither imports it.
"""
