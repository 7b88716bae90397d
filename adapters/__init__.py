"""I/O bindings of socks-sansio, installed as ``socks_sansio.adapters``.

Each backend lives in its own module and imports only its own I/O library;
importing this package imports none of them.
"""
