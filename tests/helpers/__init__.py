"""Helpers shared by test modules (never imported from one test module into another; fixtures live in
tests/conftest.py)."""
