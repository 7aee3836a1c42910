"""ESP32 sensor nodes (the CityEdge firmware) as a southbound source: see README.md."""
