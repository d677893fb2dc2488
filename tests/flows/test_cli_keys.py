"""``shelfwise keys create | list | revoke | rotate`` (in process, typer's runner): the key is
printed once and never listed, ``--json`` is a JSON document, unknown tenants and scopes are
exit code 2 naming them, and ``--tenant`` confines revoke / rotate to that tenant's keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from shelfwise.flows.cli import app
from shelfwise.serving.keys import KeyAuthenticator, KeyStore


@pytest.fixture
def cli(tmp_path: Path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(
        yaml.safe_dump(
            {
                "tenants": [
                    {"id": "default", "display_name": "D", "tasks": "*"},
                    {"id": "bakery", "display_name": "B", "tasks": ["demand_forecast"]},
                ]
            }
        )
    )
    monkeypatch.setenv("SHELFWISE_STORE_URL", url)
    monkeypatch.setenv("SHELFWISE_TENANTS_CONFIG", str(tenants))
    monkeypatch.setenv("SHELFWISE_HOME", str(tmp_path / "state"))
    runner = CliRunner()

    def run(*args: str, code: int = 0):
        result = runner.invoke(app, ["keys", *args])
        assert result.exit_code == code, (args, result.output, result.exception)
        return result

    run.url = url  # type: ignore[attr-defined]
    return run


def _json(result) -> object:
    return json.loads(result.stdout)


def test_create_list_revoke_rotate(cli) -> None:
    made = _json(cli("create", "--tenant", "bakery", "--scope", "predict", "--name", "p", "--json"))
    raw = made["key"]
    assert made["tenant"] == "bakery" and made["scopes"] == ["predict"]
    assert raw.startswith(made["prefix"] + "_")
    store = KeyStore(cli.url)
    auth = KeyAuthenticator(store, ttl_s=0)
    assert auth.authenticate(raw).tenant == "bakery"

    listed = cli("list", "--json")
    assert raw not in listed.output and raw.split("_")[-1] not in listed.output
    assert [k["key_id"] for k in _json(listed)] == [made["key_id"]]
    table = cli("list", "--tenant", "bakery")
    assert made["prefix"] in table.stdout and raw not in table.stdout
    assert _json(cli("list", "--tenant", "default", "--json")) == []

    # --tenant confines the verb: another tenant's key is unknown, and stays active
    cli("revoke", made["key_id"], "--tenant", "default", code=2)
    cli("rotate", made["key_id"], "--tenant", "default", code=2)
    assert auth.authenticate(raw) is not None

    rotated = _json(cli("rotate", made["key_id"], "--tenant", "bakery", "--json"))
    assert rotated["rotated_from"] == made["key_id"] and rotated["scopes"] == ["predict"]
    assert auth.authenticate(raw) is None and auth.authenticate(rotated["key"]).tenant == "bakery"
    revoked = _json(cli("revoke", rotated["key_id"], "--json"))
    assert revoked["revoked_at"] is not None and "key" not in revoked
    assert auth.authenticate(rotated["key"]) is None
    assert _json(cli("list", "--active", "--json")) == []
    cli("revoke", "nope", code=2)
    store.dispose()


def test_create_prints_the_key_once_in_plain_output(cli) -> None:
    out = cli("create", "--tenant", "default", "--scope", "admin", "--scope", "feedback").stdout
    (line,) = [w for w in out.split() if w.startswith("swk_") and w.count("_") >= 2]
    assert KeyAuthenticator(KeyStore(cli.url), ttl_s=0).authenticate(line).scopes == {
        "feedback",
        "admin",
    }


def test_unknown_tenant_and_scope_are_refused(cli) -> None:
    bad = cli("create", "--tenant", "grocer", "--scope", "predict", code=2)
    assert "grocer" in bad.output
    bad = cli("create", "--tenant", "bakery", "--scope", "root", code=2)
    assert "root" in bad.output
    assert _json(cli("list", "--json")) == []
