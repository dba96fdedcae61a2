"""The README documents what users type: the two commands first, every setting."""

from __future__ import annotations

from pathlib import Path

from config.settings import Settings
from driftloop.cli import app

README = (Path(__file__).parents[2] / "README.md").read_text()


def test_two_commands_come_first() -> None:
    first_block = README.split("```")[1]
    assert "make demo" in first_block and "make test" in first_block


def test_every_setting_is_in_the_configuration_table() -> None:
    missing = [
        name
        for name in Settings.model_fields
        if f"`DRIFTLOOP_{name.upper()}`" not in README or f"`{name}`" not in README
    ]
    assert missing == [], f"settings missing from README's table: {missing}"


def test_every_cli_command_is_in_the_reference() -> None:
    names = [c.name or c.callback.__name__ for c in app.registered_commands if not c.hidden]
    missing = [name for name in names if f"driftloop {name}" not in README]
    assert missing == [], f"commands missing from README's CLI table: {missing}"
