"""Telemetry: what a pack run costs, how it behaves, and what to change.

This package is the pure logic: prices and cost attribution (:mod:`.pricing`), alert
rules and their sinks (:mod:`.alerts`), the advisor's findings and right-sizing
(:mod:`.advisor`), and bounded series with their downsampling (:mod:`.series`). Each is a
function of plain records, so it is tested without a cluster; the Dask plugins and the
store feed them. Nothing here imports distributed.
"""
