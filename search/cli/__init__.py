"""The `digit-search` command line, a thin layer over the Python API in search.api."""

from search.cli.main import main

__all__ = ["main"]
