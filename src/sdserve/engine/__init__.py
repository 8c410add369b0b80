"""The model engine: the only package that imports torch and diffusers.

Importing ``sdserve.engine`` itself is cheap; torch is imported by ``engine.engine`` and the
modules it uses, which only the composition root (``sdserve.compose``) imports.
"""
