"""Builds the fold's hot loop in C; all other metadata is in pyproject.toml.

The extension is optional: without a C compiler the install still succeeds and the
fold runs the reference loop in projections/dispatch.py (see the README).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("projections._dispatch", sources=["projections/_dispatch.c"], optional=True)
    ]
)
