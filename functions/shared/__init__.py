"""Contracts shared by every step: verdicts, object references, errors, tags, settings."""
