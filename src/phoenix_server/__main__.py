"""``python -m phoenix_server`` is the ``phoenix`` command."""

from phoenix_server.cli import main

main()
