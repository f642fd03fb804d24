"""Shared test fixtures. Area-specific fixtures live in tests/<area>/conftest.py."""
