"""The data steps: each a library function with a stable name, composed by `run`."""
