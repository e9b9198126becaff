"""Checks of category power."""
