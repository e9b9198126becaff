"""Checks of category cpu."""
