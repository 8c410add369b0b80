"""Command line: the one composition root that builds concrete objects and wires them."""
