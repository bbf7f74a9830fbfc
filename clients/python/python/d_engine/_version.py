"""The package version: equal to the Cargo workspace version (the abi3 wheel's
``d_engine._native.__version__``); the client-only wheel reads it from here.
tests/test_packaging.py checks the three agree."""

__version__ = "0.1.0"
