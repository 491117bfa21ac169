"""packlab benchmarks: each ``bench_*.py`` module measures packlab beside its peers."""
