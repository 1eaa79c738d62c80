"""The libsrt binding: addresses both ways, and the library itself."""

from __future__ import annotations

import pytest

from ingest.srt import libsrt as srt


@pytest.mark.parametrize(("host", "port"), [("127.0.0.1", 9000), ("::1", 1), ("0.0.0.0", 65535)])
def test_socket_addresses_round_trip(host: str, port: int) -> None:
    assert srt.parse_sockaddr(srt.sockaddr(host, port)) == (host, port)


def test_addresses_print_as_host_and_port() -> None:
    assert srt.format_sockaddr(srt.sockaddr("::1", 5)) == "[::1]:5"
    assert srt.format_sockaddr(b"") == ":0"


def test_the_system_library_loads_and_binds() -> None:
    lib = srt.libsrt()
    assert lib.version.startswith("1.5")
    lib.startup()
    try:
        sock = lib.create_socket()
        lib.bind(sock, "127.0.0.1", 0)
        host, port = lib.sockname(sock)
        assert host == "127.0.0.1" and port > 0
        with pytest.raises(srt.SrtError):
            lib.set_str(sock, srt.SRTO_PASSPHRASE, "short")  # 10..79 characters
        lib.close(sock)
    finally:
        lib.cleanup()
