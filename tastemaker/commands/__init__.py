"""The subcommands of ``tastemaker``: argparse and printing only; the work is in ``jobs`` and the packages."""
