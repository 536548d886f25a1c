"""Every command's `--help` ends by naming the `TALLYKEY_*` settings it reads (real
setting names only); `serve --help` names every setting and the `tallykey[granian]`
extra in full; an error's brackets are printed, never taken for a style."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from tallykey.cli import output, settings_help
from tallykey.cli.main import app
from tallykey.settings import Settings

runner = CliRunner()


def command_paths(group: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        path = (*prefix, name)
        if getattr(command, "commands", None):
            yield from command_paths(command, path)
        else:
            yield path


COMMANDS = sorted(command_paths(typer.main.get_command(app)))


def help_of(path: tuple[str, ...]) -> str:
    shown = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "300"})
    assert shown.exit_code == 0, shown.output
    return " ".join(shown.output.split())


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_names_the_settings_it_reads(path: tuple[str, ...]) -> None:
    text = help_of(path)
    assert "Settings it reads: " in text, text
    named = text.split("Settings it reads: ", 1)[1]
    names = [part.strip(" .") for part in named.replace("every TALLYKEY_ setting —", "")
             .split(",")]
    fields = {settings_help.env_name(f) for f in Settings.model_fields}
    assert names and all(name.split()[0].rstrip(".") in fields for name in names), names


def test_the_table_of_settings_names_real_commands_and_settings() -> None:
    paths = {" ".join(path) for path in COMMANDS}
    assert set(settings_help.READS) <= paths, set(settings_help.READS) - paths
    for names in settings_help.READS.values():
        assert set(names) <= set(Settings.model_fields)


def test_serve_help_names_every_setting_and_the_granian_extra() -> None:
    text = help_of(("serve",))
    assert "from the optional extra tallykey[granian]." in text
    for field in Settings.model_fields:
        assert settings_help.env_name(field) in text
    connect = help_of(("connect",))
    assert "Settings it reads: TALLYKEY_REGIONS, TALLYKEY_DATA_DIR." in connect


def test_an_error_prints_its_brackets(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit):
        output.fail("granian is not installed.", "pip install 'tallykey[server,granian]'")
    assert "pip install 'tallykey[server,granian]'" in capsys.readouterr().err
