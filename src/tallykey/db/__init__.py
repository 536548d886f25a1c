"""Storage: the engine and session factory, shared column types, and Alembic migrations."""
