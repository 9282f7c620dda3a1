"""Publishing sealed data over MQTT."""
