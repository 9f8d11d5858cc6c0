"""p1logger: read DSMR P1 telegrams, store them in InfluxDB, show them in Grafana."""

__version__ = "0.1.0"
