"""Emulated Modbus devices: a profile's register map in memory (`device.py`), how its values move
(`behaviours.py`), served over TCP, RTU over TCP and pseudo-terminals (`endpoints.py`, `frames.py`)."""
