"""``python -m socks_sansio``: the same as the ``socks-sansio`` command.

The command does I/O, so it lives with the adapters; the core never imports
them. This entry point finds it the way the installed ``socks-sansio`` script
does: by the console-script entry point the distribution declares.
"""

from importlib.metadata import entry_points

(command,) = entry_points(group="console_scripts", name="socks-sansio")
raise SystemExit(command.load()())
