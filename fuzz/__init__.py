"""Fuzz targets and runners for socks-sansio; see fuzz/README.md."""
