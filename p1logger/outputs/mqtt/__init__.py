"""MQTT output with Home Assistant discovery (see docs/home-assistant.md)."""
