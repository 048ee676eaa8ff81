"""What the steps read from and write to besides PostgreSQL: backup sinks, storage sources,
the embedding model."""
