"""``shelfwise keys create | list | revoke | rotate``: the tenants' API keys (serving/keys.py).

A key is shown once, by ``create`` and ``rotate``; the store keeps only its hash. ``--tenant`` on
``revoke`` / ``rotate`` confines the verb to that tenant's keys (another tenant's key is
"unknown", as a missing one). With ``--json`` stdout carries only the JSON document."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.table import Table

from shelfwise.flows.cli_output import emit_json, stdout_to_stderr

console = Console(stderr=True)
keys_app = typer.Typer(help="API keys: one tenant each, scopes predict/feedback/admin.")

PLATFORM_OPT = typer.Option("platform", "--platform", help="platform config")
JSON_OPT = typer.Option(False, "--json", help="print the result as JSON")


@contextmanager
def _key_store(platform_config: str) -> Iterator:
    """The platform's key store, disposed after the verb; an unknown key or a bad scope exits
    with code 2, naming it."""
    from shelfwise.flows.cli import _setup
    from shelfwise.serving.keys import KeyStore, UnknownKeyError

    store = KeyStore(_setup(platform_config).store_url)
    try:
        yield store
    except (UnknownKeyError, ValueError) as exc:
        _fail(exc)
    finally:
        store.dispose()


def _known_tenant(tenant: str) -> None:
    from shelfwise.configs.loader import ConfigError
    from shelfwise.configs.tenants import load_tenants

    try:
        tenants = load_tenants()
    except ConfigError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if tenants.get(tenant) is None:
        have = ", ".join(t.id for t in tenants.tenants)
        console.print(f"[red]error:[/red] no tenant {tenant!r} (configs/tenants.yaml: {have})")
        raise typer.Exit(2)


def _fail(exc: Exception) -> None:
    console.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(2) from None


def create(
    tenant: str = typer.Option(..., "--tenant", help="the tenant the key belongs to"),
    scope: list[str] = typer.Option(
        ..., "--scope", help="predict | feedback | admin (repeat for several)"
    ),
    name: str = typer.Option(None, "--name", help="a label to recognise the key by"),
    platform_config: str = PLATFORM_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Create a key; it is printed once (store it now: only its hash is kept)."""
    with stdout_to_stderr(json_out):
        _known_tenant(tenant)
        with _key_store(platform_config) as store:
            record, raw = store.create(tenant, scope, name)
    _show_new(record, raw, json_out)


def list_keys(
    tenant: str = typer.Option(None, "--tenant", help="only this tenant's keys"),
    active: bool = typer.Option(False, "--active", help="leave out revoked keys"),
    platform_config: str = PLATFORM_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """The keys by id and prefix (never the key or its hash)."""
    with stdout_to_stderr(json_out), _key_store(platform_config) as store:
        records = store.list(tenant, include_revoked=not active)
    rows = [r.public() for r in records]
    if json_out:
        emit_json(rows)
        return
    table = Table(title=f"{len(rows)} API key(s)")
    for col in ("key_id", "prefix", "tenant", "scopes", "name", "created", "revoked"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["key_id"],
            r["prefix"],
            r["tenant"],
            ",".join(r["scopes"]),
            r["name"] or "-",
            r["created_at"][:19],
            (r["revoked_at"] or "-")[:19],
        )
    Console().print(table)


def revoke(
    key_id: str = typer.Argument(..., help="the key's id (keys list)"),
    tenant: str = typer.Option(None, "--tenant", help="only if the key is this tenant's"),
    platform_config: str = PLATFORM_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Revoke a key: the service refuses it within auth.key_cache_ttl_s, without a restart."""
    with stdout_to_stderr(json_out), _key_store(platform_config) as store:
        record = store.revoke(key_id, tenant)
    if json_out:
        emit_json(record.public())
    else:
        Console().print(f"revoked {record.prefix} ({record.tenant}) at {record.revoked_at}")


def rotate(
    key_id: str = typer.Argument(..., help="the key's id (keys list)"),
    tenant: str = typer.Option(None, "--tenant", help="only if the key is this tenant's"),
    platform_config: str = PLATFORM_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """A new key with the same tenant, scopes and name; the old one is revoked."""
    with stdout_to_stderr(json_out), _key_store(platform_config) as store:
        record, raw = store.rotate(key_id, tenant)
    _show_new(record, raw, json_out)


def _show_new(record, raw: str, json_out: bool) -> None:
    if json_out:
        emit_json({**record.public(), "key": raw})
        return
    out = Console()
    out.print(f"key {record.prefix} for tenant {record.tenant} ({', '.join(record.scopes)}):")
    out.print(raw, soft_wrap=True, highlight=False)
    out.print("shown once: only its hash is stored")


def register(app: typer.Typer) -> None:
    keys_app.command("create")(create)
    keys_app.command("list")(list_keys)
    keys_app.command("revoke")(revoke)
    keys_app.command("rotate")(rotate)
    app.add_typer(keys_app, name="keys")
