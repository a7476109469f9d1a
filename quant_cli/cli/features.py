"""Placeholder: being written."""

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("ls")
def ls() -> None:
    """Placeholder.

    Example: qfactory features ls
    """
