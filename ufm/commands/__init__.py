"""Subcommands of the ``ufm`` command (see :mod:`ufm.cli`)."""
