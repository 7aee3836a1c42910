"""The local web dashboard: the site at a glance, live; commands for logged-in users (see server.py)."""
