"""CityEdge gateway: Modbus and ESP32 nodes in the street cabinet, one clean MQTT tree upstream."""

__version__ = "0.1.0"
