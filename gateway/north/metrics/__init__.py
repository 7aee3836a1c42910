"""Prometheus metrics of the gateway (see collector.py for what is exported)."""
