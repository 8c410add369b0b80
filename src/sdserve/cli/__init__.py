"""Command line: serve, generate, models, keys, bench; objects come from ``sdserve.compose``."""
