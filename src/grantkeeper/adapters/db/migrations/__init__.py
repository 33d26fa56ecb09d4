"""Alembic's script directory (``env.py``, ``versions/``). Run migrations through ``adapters.db.schema``."""
