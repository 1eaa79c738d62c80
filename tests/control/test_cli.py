"""The `onair` command: settings precedence, `keys create|list|revoke`, and the
`streams` HTTP client against a live server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from control.cli import main, table
from control.http.app import make_http_app
from control.node import build_node
from control.settings import Settings, SettingsError, load_settings


def test_defaults_match_the_contract() -> None:
    s = load_settings({})
    assert (s.data_dir, s.http_port, s.rtmp_port, s.redis_url) == ("./data", 8080, 1935, None)
    assert s.s3_bucket is None


def test_env_beats_toml_beats_defaults(tmp_path: Path) -> None:
    toml = tmp_path / "onair.toml"
    toml.write_text('http_port = 9000\nrtmp_port = 1936\npublic_url = "https://tv.example"\n')
    s = load_settings({"ONAIR_HTTP_PORT": "9100"}, toml_path=toml)
    assert s.http_port == 9100  # env
    assert s.rtmp_port == 1936  # toml
    assert s.body_limit_bytes == Settings().body_limit_bytes  # default
    assert s.rtmp_url == "rtmp://tv.example:1936/live"
    assert s.whip_url == "https://tv.example/v1/whip"
    assert s.dashboard_url == "https://tv.example/dashboard"


def test_config_file_from_env_and_bad_values(tmp_path: Path) -> None:
    toml = tmp_path / "x.toml"
    toml.write_text("[onair]\nredis_url = 'redis://r:6379/0'\n")
    assert load_settings({"ONAIR_CONFIG": str(toml)}).redis_url == "redis://r:6379/0"
    with pytest.raises(SettingsError):
        load_settings({"ONAIR_HTTP_PORT": "eighty"})
    toml.write_text("colour = 'red'\n")
    with pytest.raises(SettingsError):
        load_settings({}, toml_path=toml)
    assert load_settings({"ONAIR_ACCESS_LOG": "false"}).access_log is False


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_keys_create_prints_the_key_alone_on_the_last_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ONAIR_REDIS_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    data = str(tmp_path / "d")
    code, out, _ = _run(
        capsys, "--data-dir", data, "keys", "create", "--scope", "admin", "--name", "ci"
    )
    assert code == 0
    key = out.strip().splitlines()[-1]
    assert key.startswith("onair_sk_") and " " not in key
    code, out, _ = _run(capsys, "--data-dir", data, "keys", "list")
    assert code == 0 and "ci" in out and "admin" in out and key not in out
    key_id = out.splitlines()[1].split()[0]
    code, out, _ = _run(capsys, "--data-dir", data, "keys", "revoke", key_id)
    assert code == 0 and key_id in out
    code, out, _ = _run(capsys, "--data-dir", data, "keys", "list")
    assert "revoked" in out
    code, _, err = _run(capsys, "--data-dir", data, "keys", "revoke", "key_nope")
    assert code == 1 and "no such" in err


async def test_streams_client_against_a_live_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ONAIR_REDIS_URL", raising=False)
    data = str(tmp_path / "d")
    settings = load_settings({}, data_dir=data, access_log=False)
    server = TestServer(make_http_app(build_node(settings, media=False)), host="127.0.0.1")
    await server.start_server()
    try:
        code = await asyncio.to_thread(
            main, ["--data-dir", data, "keys", "create", "--scope", "write"]
        )
        key = capsys.readouterr().out.strip().splitlines()[-1]
        url = str(server.make_url("/"))
        monkeypatch.setenv("ONAIR_API_URL", url)
        monkeypatch.setenv("ONAIR_API_KEY", key)
        code = await asyncio.to_thread(main, ["streams", "create", "--name", "Stage A"])
        out = capsys.readouterr().out
        assert code == 0 and "Stage A" in out and "rtmp://" in out and "stream key" in out
        ls_id = out.splitlines()[0].split()[-1]
        code = await asyncio.to_thread(main, ["streams", "list"])
        out = capsys.readouterr().out
        assert code == 0 and out.splitlines()[0].split()[:3] == ["ID", "NAME", "STATUS"]
        assert ls_id in out and "idle" in out
        code = await asyncio.to_thread(main, ["streams", "show", ls_id])
        assert code == 0 and ls_id in capsys.readouterr().out
        code = await asyncio.to_thread(main, ["streams", "show", "ls_missing"])
        assert code == 1 and "404 not_found" in capsys.readouterr().err
        monkeypatch.setenv("ONAIR_API_KEY", "onair_sk_wrongwrongwrongwrongwrong")
        code = await asyncio.to_thread(main, ["streams", "list"])
        assert code == 1 and "401" in capsys.readouterr().err
    finally:
        await server.close()


def test_table_renders_aligned_columns() -> None:
    text = table([{"id": "a", "n": None}, {"id": "bbbb", "n": True}], ["id", "n"])
    assert text.splitlines() == ["ID    N", "a     -", "bbbb  yes"]
