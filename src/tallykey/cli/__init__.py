"""The `tallykey` command line (`tallykey.cli.main.app`), one module per command group;
`output` and `context` at the bottom are what every command prints and runs with."""

from tallykey.cli.main import app

__all__ = ["app"]
