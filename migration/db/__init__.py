"""Database plumbing: connections (SSL), client tools, schema apply, COPY, state, locks, roles."""
