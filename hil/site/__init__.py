"""Emulated sites: a scenario file (`scenario.py`) becomes running devices, nodes and a broker (`emulated.py`),
run against a gateway with a timeline and a verdict (`runner.py`), steered at run time (`control.py`);
the demo is one such site (`demo.py`)."""
