"""SDP offer checks and the networking config (no public STUN, loopback host
candidates, public IP, port range)."""

from __future__ import annotations

import socket

import pytest
from aiortc import RTCPeerConnection

from ingest.webrtc.config import IceServer, WebRtcConfig, parse_ice_server, prepare_ice
from ingest.webrtc.sdp import SdpError, UnsupportedOffer, inspect_offer


async def _offer(
    config: WebRtcConfig, kinds: tuple[str, ...] = ("audio", "video"), direction: str = "sendonly"
) -> str:
    pc = RTCPeerConnection(config.rtc_configuration())
    for kind in kinds:
        pc.addTransceiver(kind, direction=direction)
    prepare_ice(pc, config)
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


def _candidates(sdp: str) -> list[list[str]]:
    return [line.split() for line in sdp.splitlines() if line.startswith("a=candidate:")]


async def test_loopback_config_offers_only_127_0_0_1_and_no_stun() -> None:
    config = WebRtcConfig.loopback()
    assert config.rtc_configuration().iceServers == []
    sdp = await _offer(config)
    cands = _candidates(sdp)
    assert cands and {c[4] for c in cands} == {"127.0.0.1"}
    assert all(c[7] == "host" for c in cands)


async def test_public_ip_is_advertised_and_port_range_is_used() -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    config = WebRtcConfig(
        host_addresses=("127.0.0.1",), udp_port_min=port, udp_port_max=port, public_ip="203.0.113.7"
    )
    sdp = await _offer(config, kinds=("video",))
    cands = _candidates(sdp)
    assert {int(c[5]) for c in cands} == {port}
    # the public address is not added for a loopback socket (it could never reach it)
    assert "203.0.113.7" not in {c[4] for c in cands}


def test_config_from_env() -> None:
    config = WebRtcConfig.from_env(
        {
            "ONAIR_WEBRTC_PUBLIC_IP": "203.0.113.7",
            "ONAIR_WEBRTC_HOSTS": "127.0.0.1, 10.0.0.5",
            "ONAIR_WEBRTC_UDP_PORTS": "40000-40099",
            "ONAIR_WEBRTC_ICE_SERVERS": "stun:stun.example.org:3478,turn:u:p@turn.example.org:3478",
        }
    )
    assert config.public_ip == "203.0.113.7"
    assert config.host_addresses == ("127.0.0.1", "10.0.0.5")
    assert (config.udp_port_min, config.udp_port_max) == (40000, 40099)
    assert config.ice_servers == (
        IceServer(urls=("stun:stun.example.org:3478",)),
        IceServer(urls=("turn:turn.example.org:3478",), username="u", credential="p"),
    )
    assert config.link_headers()[0] == '<stun:stun.example.org:3478>; rel="ice-server"'
    assert WebRtcConfig.from_env({}).ice_servers == ()
    with pytest.raises(ValueError):
        parse_ice_server("http://x")
    with pytest.raises(ValueError):
        WebRtcConfig(udp_port_min=10, udp_port_max=5)


@pytest.mark.parametrize("garbage", ["", "hello", "v=0\r\nm=audio\r\n", "v=0\r\n" + "x" * 100])
def test_garbage_offers_are_sdp_errors(garbage: str) -> None:
    with pytest.raises(SdpError):
        inspect_offer(garbage, sending=True)


async def test_offer_checks() -> None:
    config = WebRtcConfig.loopback()
    sending = await _offer(config)
    summary = inspect_offer(sending, sending=True)
    assert summary.video and summary.video.h264_ok and "vp8" in summary.video.codecs
    assert summary.audio and "opus" in summary.audio.codecs
    with pytest.raises(UnsupportedOffer, match="WHEP offers must receive"):
        inspect_offer(sending, sending=False)
    receiving = await _offer(config, direction="recvonly")
    assert inspect_offer(receiving, sending=False).video is not None
    with pytest.raises(UnsupportedOffer, match="WHIP offers must send"):
        inspect_offer(receiving, sending=True)
    h264_less = receiving.replace("H264/90000", "H265/90000")
    with pytest.raises(UnsupportedOffer, match="needs H264"):
        inspect_offer(h264_less, sending=False)
    no_ice = "\r\n".join(line for line in sending.split("\r\n") if "ice-pwd" not in line)
    with pytest.raises(SdpError, match="ice"):
        inspect_offer(no_ice, sending=True)


def test_mdns_candidates_are_dropped_with_end_of_candidates() -> None:
    from ingest.webrtc.sdp import strip_mdns_candidates

    name = "4f1c2b3a-0000-4000-8000-000000000000.local"
    sdp = (
        "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
        f"a=candidate:1 1 udp 2122260223 {name} 5000 typ host\r\n"
        "a=candidate:2 1 udp 1686052607 198.51.100.4 5000 typ srflx raddr 0.0.0.0 rport 0\r\n"
        "a=end-of-candidates\r\n"
    )
    out = strip_mdns_candidates(sdp)
    assert ".local" not in out and "198.51.100.4" in out and "end-of-candidates" not in out
    plain = sdp.replace(name, "192.0.2.1")
    assert strip_mdns_candidates(plain) == plain
