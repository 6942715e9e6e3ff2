"""The sweep spec: its schema, defaults and checks (bad input becomes one line, exit 2)."""
