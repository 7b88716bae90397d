"""End-to-end tests of ``socks-sansio serve`` against real clients (curl, python-socks, PySocks) and raw sockets."""
