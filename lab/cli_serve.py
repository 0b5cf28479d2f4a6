"""`pmemlab serve`: the read-only results dashboard (lab/web), added to lab.cli's group."""

from __future__ import annotations

from pathlib import Path

import click

from lab.cli_common import db_option, lab_errors, open_store
from lab.errors import ConfigError
from lab.ui import UI


@click.command()
@db_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (localhost by default).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--known-issues", "known_path", type=click.Path(path_type=Path), default=None,
              help="TOML file of known issues shown as known on comparison pages.")
@lab_errors
def serve(db: str | None, host: str, port: int, known_path: Path | None) -> None:
    """Serve a read-only web dashboard over the results database until Ctrl-C."""
    try:
        import uvicorn

        from lab.web.app import create_app
    except ImportError as exc:
        raise ConfigError(f"pmemlab serve needs the 'web' extra ({exc.name} is missing): "
                          "pip install 'pmemlab[web]'") from exc
    from lab.known_issues import KnownIssues, load_known_issues

    known = load_known_issues(known_path) if known_path is not None else KnownIssues(())
    store = open_store(db)
    try:
        UI().info(f"serving {store.url.split('://')[0]} results on http://{host}:{port}/ (Ctrl-C stops)",
                  literal=True)
        uvicorn.run(create_app(store, known), host=host, port=port, log_level="warning")
    finally:
        store.close()
