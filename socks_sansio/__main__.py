"""``python -m socks_sansio``: the same as the ``socks-sansio`` command (which lives with the adapters)."""

from socks_sansio.adapters.cli import main

raise SystemExit(main())
