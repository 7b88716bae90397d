"""``python -m socks_sansio``: the same as the ``socks-sansio`` command."""

from ._cli import main

raise SystemExit(main())
