"""Bytecode for what tallykey imports, and only that (run in the image's build stage).

The wheels are installed without compiling (`pip install --no-compile`); importing every
tallykey module and the server's lazily imported ones writes `__pycache__` for tallykey and
for the parts of its dependencies it uses. The rest (lexers, unused database dialects...)
stays source only: about 25 MB less, and a module never imported costs nothing.
"""

import compileall
import importlib
import pkgutil
import sys

import tallykey

LAZY = ["uvicorn", "uvicorn.main", "uvicorn.config", "uvicorn.server",
        "uvicorn.loops.uvloop", "uvicorn.protocols.http.httptools_impl",
        "uvicorn.protocols.http.h11_impl", "uvicorn.protocols.websockets.auto",
        "uvicorn.lifespan.on", "uvicorn.logging", "uvicorn.middleware.proxy_headers",
        "sqlalchemy.dialects.postgresql.psycopg", "sqlalchemy.dialects.sqlite.pysqlite",
        "psycopg", "psycopg_binary", "redis.asyncio", "alembic.command",
        "alembic.runtime.migration", "alembic.ddl.postgresql", "alembic.ddl.sqlite",
        "smtplib", "email.mime.text"]

compileall.compile_dir(tallykey.__path__[0], quiet=1)
failed = []
for module in pkgutil.walk_packages(tallykey.__path__, "tallykey."):
    try:
        importlib.import_module(module.name)
    except Exception as error:  # a module that needs a runtime to import
        failed.append(f"{module.name}: {error}")
for name in LAZY:
    importlib.import_module(name)
if failed:
    print("not imported (compiled only):", *failed, sep="\n  ", file=sys.stderr)
