"""Providers that start workers through a cloud API (ADR 0025)."""
