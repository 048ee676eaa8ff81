"""Development-only helpers: embedded PostgreSQL servers and the demo with its generated data."""
