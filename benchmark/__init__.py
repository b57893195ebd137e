"""dualbench: the evaluation suite — data, grids, metrics, run loop, results, tables, CLI."""

from dualreal import __version__

__all__ = ["__version__"]
