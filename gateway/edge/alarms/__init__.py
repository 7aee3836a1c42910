"""Alarms with a lifecycle: see manager.py."""
