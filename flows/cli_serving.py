"""``shelfwise serve``: run the BentoML service (serving/service.py) with the platform config."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import typer
from rich.console import Console

console = Console()


def serve(
    platform_config: str = typer.Option("platform", "--platform", help="platform config"),
    serving_config: str = typer.Option("serving", "--serving", help="serving config"),
    port: int = typer.Option(None, help="port (default: platform serving.port)"),
    host: str = typer.Option(None, help="host (default: platform serving.host)"),
    detach: bool = typer.Option(False, help="start in the background and return once ready"),
) -> None:
    """Serve every declared task over HTTP, following each one's @champion (hot swap)."""
    from shelfwise.configs.loader import ConfigError
    from shelfwise.configs.platform import load_platform_config
    from shelfwise.configs.serving import load_serving_config
    from shelfwise.flows.environment import configure_logging
    from shelfwise.registry.server import ServerError
    from shelfwise.serving.run import serve_command, serving_env, start_serving
    from shelfwise.serving.service import tracking_uri_for

    configure_logging()
    try:
        platform = load_platform_config(platform_config)
        load_serving_config(serving_config)  # fail here, naming the key, not in a worker
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    if host:
        platform = platform.model_copy(
            update={"serving": platform.serving.model_copy(update={"host": host})}
        )
    port = port or platform.serving.port
    tracking_uri = tracking_uri_for(platform)
    env = {
        **serving_env(platform, tracking_uri),
        "SHELFWISE_PLATFORM_CONFIG": platform_config,
        "SHELFWISE_SERVING_CONFIG": serving_config,
    }
    console.print(f"tracking {tracking_uri}; store {platform.store_url}")
    if detach:
        try:
            server, pid = start_serving(platform, tracking_uri, port=port, env=env)
        except ServerError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
        console.print(f"serving at {server.url} (pid {pid}; log {server.log_file})")
        return
    console.print(f"serving at http://{platform.serving.host}:{port} (Ctrl-C stops)")
    cmd = serve_command(platform.serving.host, port)
    try:
        code = subprocess.call(cmd, env={**os.environ, **env}, cwd=Path.cwd())
    except KeyboardInterrupt:
        code = 0
    raise typer.Exit(code)
