"""OPC UA driver (asyncua client): subscriptions, polling, events and alarms."""
