"""Helpers for tests and smoke checks: random-weight stand-ins in the formats of weights we cannot ship."""
