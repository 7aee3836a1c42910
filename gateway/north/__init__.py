"""Northbound: the MQTT connection, the message queue in front of it, and the features that publish."""
