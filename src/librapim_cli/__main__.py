"""``python -m librapim_cli``: the same program as the ``librapim`` console script."""

from librapim_cli.cli.app import main

if __name__ == "__main__":
    main()
