"""pollbridge: turns poll-only REST APIs into signed webhooks."""

__version__ = "0.1.0"
