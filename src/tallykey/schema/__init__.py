"""The database schema as a whole: every table (`tables`) and its history (`migrations`,
Alembic). It sits at the top: it knows every package's models; no package imports it
(`tallykey.db.migrate` runs the migrations by path)."""
