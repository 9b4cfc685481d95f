"""The ``librapim`` command line: one typer module per command, errors mapped to exit codes in app.py."""
