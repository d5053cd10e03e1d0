"""Options shared by several commands, defined once."""

from __future__ import annotations

import click

format_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Human text, or one JSON document on stdout.",
)
