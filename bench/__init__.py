"""Benchmarks for socks-sansio against the tools people would use instead.

Run ``python -m bench [--quick] [--json FILE] [--only NAME[,NAME]] [--list]``.
See bench/README.md for what each benchmark measures and how to read ratios;
shared infrastructure lives in :mod:`bench.common`.
"""
