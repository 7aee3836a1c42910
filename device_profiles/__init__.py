"""Shipped device profiles (YAML, one file per device model). A package only so installs carry the files."""
