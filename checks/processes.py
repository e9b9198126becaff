"""Checks of category processes."""
