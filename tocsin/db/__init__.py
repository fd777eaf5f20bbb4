"""Postgres: the tables, their migrations and the `Database` handle."""

from tocsin.db.database import Database

__all__ = ["Database"]
