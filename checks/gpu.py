"""Checks of category gpu."""
