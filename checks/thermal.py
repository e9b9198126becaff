"""Checks of category thermal."""
