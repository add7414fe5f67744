"""Grafana dashboards and Prometheus alert rules for sqlspec-ops (``generate`` writes the JSON and PrometheusRule)."""
