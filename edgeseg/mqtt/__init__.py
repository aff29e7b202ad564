"""MQTT: the broker connection and its spool, the topics and payloads, discovery, remote commands."""
