"""Checks of category system."""
