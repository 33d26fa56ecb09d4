"""The store: SQLAlchemy Core on SQLite (the embedded default) or PostgreSQL (many workers); all the SQL.

Public names: ``make_engine`` (accepts URLs as users write them), ``migrate`` / ``is_current`` /
``ensure_schema`` (Alembic, run from code) and ``SqlStore`` (the ``ConnectionStore`` port).
"""

from grantkeeper.adapters.db.engine import make_engine
from grantkeeper.adapters.db.schema import ensure_schema, is_current, migrate
from grantkeeper.adapters.db.store import SqlStore

__all__ = ["SqlStore", "ensure_schema", "is_current", "make_engine", "migrate"]
