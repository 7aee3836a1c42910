"""Indicators of what the lighting achieves: see tracker.py."""
