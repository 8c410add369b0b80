"""sdserve: a self-hosted Stable Diffusion server with several API dialects over one engine."""

__all__ = ["__version__"]
__version__ = "0.1.0"
