"""Auxiliary models beside the diffusion models: the safety checker, the prompt enhancer
and the captioner (specs.py: which, and where their weights are; models.py: loaded and
run; filters.py: what a flagged image becomes; tiny.py: tiny random-weight versions)."""
