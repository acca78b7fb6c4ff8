"""Builds the fold's hot loop in C; all other metadata is in pyproject.toml.

The extension is optional: without a C compiler the install still succeeds and the
fold runs the reference loop in projections/foldloop.py (see the README).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("projections._foldcore", sources=["projections/_foldcore.c"], optional=True)
    ]
)
