"""Lighting programs, photocells, motion and overrides: see controller.py and program.py."""
