"""Session-wide fixtures shared by every test folder."""

from tests.databases import servers

__all__ = ["servers"]
