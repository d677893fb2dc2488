"""`shelfwise serve` fails early, naming the key, on a bad serving config."""

from __future__ import annotations

from typer.testing import CliRunner

from shelfwise.flows.cli import app


def test_serve_rejects_bad_config_naming_the_key(tmp_path) -> None:
    bad = tmp_path / "serving.yaml"
    bad.write_text("batching:\n  max_latency_ms: 20\n")
    result = CliRunner().invoke(app, ["serve", "--serving", str(bad)])
    assert result.exit_code == 2
    assert "batching.max_latency_ms" in result.output


def test_serve_is_registered() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0 and "champion" in result.output
