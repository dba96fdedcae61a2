"""Safe serving defaults without a server: keyless serving stays on loopback and says so."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from config.serving import ServingSettings
from driftloop.cli import app
from driftloop.serving import UnsafeBind, check_bind, is_loopback_host, warn_if_open


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.53", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("example.com", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_a_keyless_service_binds_beyond_loopback_only_when_insecure() -> None:
    with pytest.raises(UnsafeBind, match=r"without an API key: set DRIFTLOOP_API_KEY"):
        check_bind("0.0.0.0", ServingSettings())
    check_bind("127.0.0.1", ServingSettings())
    check_bind("0.0.0.0", ServingSettings(insecure=True))
    check_bind("0.0.0.0", ServingSettings(api_key="k"))


def test_serving_without_a_key_warns_loudly(capsys: pytest.CaptureFixture[str]) -> None:
    warn_if_open("0.0.0.0", 3000, ServingSettings(insecure=True))
    assert "WARNING: no API key" in capsys.readouterr().err
    warn_if_open("127.0.0.1", 3000, ServingSettings(api_key="k"))
    assert capsys.readouterr().err == ""


def test_serve_refuses_a_keyless_public_bind_with_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTLOOP_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("DRIFTLOOP_API_KEY", raising=False)
    monkeypatch.delenv("DRIFTLOOP_INSECURE", raising=False)
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "refusing to listen on 0.0.0.0" in lines[0]
    assert "--insecure" in lines[0]
