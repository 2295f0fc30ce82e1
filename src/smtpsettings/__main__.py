"""``python -m smtpsettings``: the same as the ``smtpsettings`` command."""

from smtpsettings.cli import main

main()
