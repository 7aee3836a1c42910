"""What every file format of CityEdge shares: YAML with positions, located problems, validation, bounded types."""
