"""WebRTC networking settings and the peer-connection factory that applies them.

Owns `WebRtcConfig` (ICE servers, host-candidate addresses, public IP, UDP port
range) and `new_peer_connection` / `prepare_ice`, which make aiortc/aioice honour
it without touching any global state:

* aiortc falls back to a public Google STUN host when `iceServers` is None; we
  always pass an explicit list (empty by default), so nothing leaves the host
  unless configured.
* aioice (0.13) gathers host candidates on every non-loopback address, on
  OS-assigned ports, and has no option for addresses or port ranges. `prepare_ice`
  replaces `get_component_candidates` on each *instance* of aioice's `Connection`
  owned by one peer connection (before `setLocalDescription` gathers) with
  `_gather_component`, which binds the configured addresses (127.0.0.1 allowed)
  on ports from the configured range, then asks the STUN/TURN servers like
  aioice does. Other peer connections in the process are not affected.
* `public_ip` (ONAIR_WEBRTC_PUBLIC_IP, for 1:1 NAT such as a cloud VM) is
  advertised as an extra host candidate on the port of each IPv4 socket; the
  peer's checks to it arrive on that socket and pair as peer-reflexive.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import os
import random
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ifaddr
from aioice import ice as aioice_ice
from aioice.candidate import Candidate, candidate_foundation, candidate_priority
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection


@dataclass(frozen=True, slots=True)
class IceServer:
    """One STUN or TURN server (`stun:host:port`, `turn:host:port?transport=udp`)."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None

    def to_aiortc(self) -> RTCIceServer:
        return RTCIceServer(
            urls=list(self.urls), username=self.username, credential=self.credential
        )

    def link_headers(self) -> list[str]:
        """RFC 9725 §4.6 `Link: <url>; rel="ice-server"` values."""
        out = []
        for url in self.urls:
            value = f'<{url}>; rel="ice-server"'
            if self.username is not None and self.credential is not None:
                value += (
                    f'; username="{self.username}"; credential="{self.credential}"'
                    '; credential-type="password"'
                )
            out.append(value)
        return out


@dataclass(frozen=True, slots=True)
class WebRtcConfig:
    ice_servers: tuple[IceServer, ...] = ()
    """STUN/TURN servers. None by default: no public STUN host is contacted."""
    host_addresses: tuple[str, ...] = ()
    """IP addresses to gather host candidates on ("127.0.0.1" for loopback tests)."""
    interfaces: tuple[str, ...] = ()
    """Network interface names (e.g. "eth0") whose addresses are used."""
    include_loopback: bool = False
    """Add 127.0.0.1 to whatever else is gathered."""
    public_ip: str | None = None
    """Extra host candidate address (1:1 NAT), ONAIR_WEBRTC_PUBLIC_IP."""
    udp_port_min: int = 0
    udp_port_max: int = 0
    """Inclusive UDP port range for ICE sockets; 0/0 = OS-assigned ports."""
    use_ipv6: bool = False
    connect_timeout_s: float = 10.0
    """A session whose peer connection is not connected by then is dropped."""
    allow_private_candidates: bool = False
    """Probe remote candidates on loopback/private/link-local addresses too. Off,
    an offer cannot make the server send ICE checks into its own network; the
    browser still reaches us and pairs as peer-reflexive."""
    max_sessions: int = 1000
    """Sessions at once per service (WHIP and WHEP each); beyond it 503."""
    max_sessions_per_stream: int = 500
    max_sessions_per_ip: int = 20
    """Per client address (IPv6: per /64); beyond it 429."""
    turn_secret: str | None = None
    """Shared secret of a TURN server using the TURN REST API scheme (coturn's
    `use-auth-secret`): credentials handed out are `expiry:user` and
    base64(HMAC-SHA1(secret, that)), valid for `turn_ttl_s`."""
    turn_urls: tuple[str, ...] = ()
    turn_ttl_s: int = 3600

    def __post_init__(self) -> None:
        for addr in (*self.host_addresses, *((self.public_ip,) if self.public_ip else ())):
            ipaddress.ip_address(addr)  # raises ValueError on garbage
        if (self.udp_port_min or self.udp_port_max) and not (
            0 < self.udp_port_min <= self.udp_port_max <= 65535
        ):
            raise ValueError("udp port range must satisfy 0 < min <= max <= 65535")

    @classmethod
    def loopback(cls, **kwargs: Any) -> WebRtcConfig:
        """Only 127.0.0.1, no ICE servers: for tests and single-machine setups
        (whose peers' candidates are on loopback too)."""
        kwargs.setdefault("allow_private_candidates", True)
        return cls(host_addresses=("127.0.0.1",), **kwargs)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WebRtcConfig:
        """Settings from the environment:

        ONAIR_WEBRTC_PUBLIC_IP=203.0.113.7
        ONAIR_WEBRTC_HOSTS=10.0.0.5,127.0.0.1       (host candidate addresses)
        ONAIR_WEBRTC_INTERFACES=eth0
        ONAIR_WEBRTC_UDP_PORTS=40000-40999
        ONAIR_WEBRTC_ICE_SERVERS=stun:stun.example.org:3478,turn:user:pass@turn.example.org:3478
        ONAIR_WEBRTC_TURN_URLS=turn:turn.example.org:3478 + ONAIR_WEBRTC_TURN_SECRET=...
        ONAIR_WEBRTC_ALLOW_PRIVATE_CANDIDATES=true, ONAIR_WEBRTC_CONNECT_TIMEOUT_S=10
        ONAIR_WEBRTC_MAX_SESSIONS, _MAX_SESSIONS_PER_STREAM, _MAX_SESSIONS_PER_IP
        """
        env = os.environ if environ is None else environ

        def csv(name: str) -> tuple[str, ...]:
            return tuple(x.strip() for x in env.get(name, "").split(",") if x.strip())

        servers = []
        for spec in csv("ONAIR_WEBRTC_ICE_SERVERS"):
            servers.append(parse_ice_server(spec))
        port_min = port_max = 0
        ports = env.get("ONAIR_WEBRTC_UDP_PORTS", "").strip()
        if ports:
            lo, _, hi = ports.partition("-")
            port_min, port_max = int(lo), int(hi or lo)

        def flag(name: str) -> bool:
            return env.get(name, "").strip().lower() in ("1", "true", "yes", "on")

        def number(name: str, default: float) -> float:
            raw = env.get(name, "").strip()
            return float(raw) if raw else default

        loopback = flag("ONAIR_WEBRTC_LOOPBACK")
        private = env.get("ONAIR_WEBRTC_ALLOW_PRIVATE_CANDIDATES", "").strip()
        return cls(
            ice_servers=tuple(servers),
            host_addresses=csv("ONAIR_WEBRTC_HOSTS"),
            interfaces=csv("ONAIR_WEBRTC_INTERFACES"),
            include_loopback=loopback,
            public_ip=env.get("ONAIR_WEBRTC_PUBLIC_IP") or None,
            udp_port_min=port_min,
            udp_port_max=port_max,
            connect_timeout_s=number("ONAIR_WEBRTC_CONNECT_TIMEOUT_S", 10.0),
            # a service offering loopback candidates serves peers on this machine
            allow_private_candidates=flag("ONAIR_WEBRTC_ALLOW_PRIVATE_CANDIDATES")
            if private
            else loopback,
            max_sessions=int(number("ONAIR_WEBRTC_MAX_SESSIONS", 1000)),
            max_sessions_per_stream=int(number("ONAIR_WEBRTC_MAX_SESSIONS_PER_STREAM", 500)),
            max_sessions_per_ip=int(number("ONAIR_WEBRTC_MAX_SESSIONS_PER_IP", 20)),
            turn_secret=env.get("ONAIR_WEBRTC_TURN_SECRET") or None,
            turn_urls=csv("ONAIR_WEBRTC_TURN_URLS"),
            turn_ttl_s=int(number("ONAIR_WEBRTC_TURN_TTL_S", 3600)),
        )

    def turn_credentials(self, user: str = "onair", now: float | None = None) -> IceServer | None:
        """Fresh time-limited TURN credentials (TURN REST API), or None."""
        if not self.turn_secret or not self.turn_urls:
            return None
        expiry = int(time.time() if now is None else now) + self.turn_ttl_s
        username = f"{expiry}:{user}"
        mac = hmac.new(self.turn_secret.encode(), username.encode(), hashlib.sha1).digest()
        return IceServer(self.turn_urls, username, base64.b64encode(mac).decode())

    def _servers(self) -> list[IceServer]:
        turn = self.turn_credentials()
        return [*self.ice_servers, *([turn] if turn is not None else [])]

    def rtc_configuration(self) -> RTCConfiguration:
        # An explicit (possibly empty) list: None would make aiortc use Google's STUN.
        return RTCConfiguration(iceServers=[s.to_aiortc() for s in self._servers()])

    def link_headers(self) -> list[str]:
        """RFC 9725 §4.6 ice-server links: static servers, and TURN with credentials
        minted now (an unauthenticated OPTIONS never learns a lasting secret)."""
        return [h for s in self._servers() for h in s.link_headers()]

    def gather_addresses(self) -> list[str]:
        """The local addresses host candidates are gathered on."""
        addresses: list[str] = list(self.host_addresses)
        if self.interfaces:
            for adapter in ifaddr.get_adapters():
                if adapter.nice_name not in self.interfaces and adapter.name not in self.interfaces:
                    continue
                for ip in adapter.ips:
                    if isinstance(ip.ip, str):
                        addresses.append(ip.ip)
                    elif self.use_ipv6 and ip.ip[2] == 0:
                        addresses.append(ip.ip[0])
        if not self.host_addresses and not self.interfaces:
            addresses = aioice_ice.get_host_addresses(use_ipv4=True, use_ipv6=self.use_ipv6)
        if self.include_loopback:
            addresses.append("127.0.0.1")
        unique: list[str] = []
        for a in addresses:
            if a not in unique:
                unique.append(a)
        return unique


def parse_ice_server(spec: str) -> IceServer:
    """`stun:host:port` or `turn:user:pass@host:port[?transport=udp]` (credentials inline)."""
    scheme, _, rest = spec.partition(":")
    if scheme not in ("stun", "stuns", "turn", "turns") or not rest:
        raise ValueError(f"bad ICE server {spec!r}")
    if "@" in rest:
        cred, _, hostpart = rest.rpartition("@")
        user, _, password = cred.partition(":")
        return IceServer(urls=(f"{scheme}:{hostpart}",), username=user, credential=password)
    return IceServer(urls=(spec,))


def new_peer_connection(config: WebRtcConfig) -> RTCPeerConnection:
    """A peer connection using only the configured ICE servers (none by default).
    Call `prepare_ice(pc, config)` after the transceivers exist (after
    `setRemoteDescription` for an answerer, before `setLocalDescription`)."""
    return RTCPeerConnection(configuration=config.rtc_configuration())


def prepare_ice(pc: RTCPeerConnection, config: WebRtcConfig) -> None:
    """Make every ICE agent of `pc` gather as `config` says (idempotent)."""
    connections = []
    for t in pc.getTransceivers():
        connections.append(t.receiver.transport.transport.iceGatherer._connection)
        connections.append(t.sender.transport.transport.iceGatherer._connection)
    if pc.sctp is not None:
        connections.append(pc.sctp.transport.transport.iceGatherer._connection)
    for conn in connections:
        if getattr(conn, "_onair_prepared", False):
            continue
        conn._onair_prepared = True  # type: ignore[attr-defined]
        addresses = config.gather_addresses()

        async def gather(
            component: int,
            addresses: list[str],
            timeout: int = 5,  # noqa: ASYNC109
            *,
            _conn: Any = conn,
            _addresses: list[str] = addresses,
        ) -> list[Candidate]:
            if _conn._transport_policy != aioice_ice.TransportPolicy.ALL:
                _addresses = []  # relay-only policy: no host candidates (RFC 9429 §3.5.3)
            return await _gather_component(_conn, component, _addresses, config, timeout)

        conn.get_component_candidates = gather  # type: ignore[method-assign]


def _bind_udp(address: str, config: WebRtcConfig) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if config.udp_port_min:
            ports = list(range(config.udp_port_min, config.udp_port_max + 1))
            random.shuffle(ports)
            for port in ports:
                try:
                    sock.bind((address, port))
                    break
                except OSError:
                    continue
            else:
                raise OSError(f"no free UDP port in {config.udp_port_min}-{config.udp_port_max}")
        else:
            sock.bind((address, 0))
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024 * 1024)
    except BaseException:
        sock.close()
        raise
    return sock


async def _gather_component(
    conn: Any,
    component: int,
    addresses: list[str],
    config: WebRtcConfig,
    timeout: int,  # noqa: ASYNC109
) -> list[Candidate]:
    """aioice's `Connection.get_component_candidates`, with our addresses and ports."""
    loop = asyncio.get_running_loop()
    candidates: list[Candidate] = []
    host_protocols = []
    for address in addresses:
        try:
            sock = _bind_udp(address, config)
            _, protocol = await loop.create_datagram_endpoint(
                lambda: aioice_ice.StunProtocol(conn), sock=sock
            )
        except OSError:
            continue
        host, port = protocol.transport.get_extra_info("sockname")[:2]
        protocol.local_candidate = Candidate(
            foundation=candidate_foundation("host", "udp", host),
            component=component,
            transport="udp",
            priority=candidate_priority(component, "host"),
            host=host,
            port=port,
            type="host",
        )
        candidates.append(protocol.local_candidate)
        host_protocols.append(protocol)
    conn._protocols += host_protocols

    if config.public_ip:
        for protocol in host_protocols:
            local = protocol.local_candidate
            if ":" in local.host or local.host == config.public_ip or local.host == "127.0.0.1":
                continue
            candidates.append(
                Candidate(
                    foundation=candidate_foundation("host", "udp", config.public_ip),
                    component=component,
                    transport="udp",
                    priority=candidate_priority(component, "host", local_pref=65534),
                    host=config.public_ip,
                    port=local.port,
                    type="host",
                )
            )
            break

    tasks: list[asyncio.Task[Any]] = []
    if conn.stun_server:
        for protocol in host_protocols:
            host = protocol.local_candidate.host
            ip = ipaddress.ip_address(host)
            if ip.version == 4 and not ip.is_loopback:
                tasks.append(
                    asyncio.create_task(
                        aioice_ice.server_reflexive_candidate(protocol, conn.stun_server)
                    )
                )
    if conn.turn_server:
        tasks.append(
            asyncio.create_task(
                aioice_ice.relayed_candidate(
                    component=component,
                    hide_related_address=conn._transport_policy == aioice_ice.TransportPolicy.RELAY,
                    protocol_factory=lambda: aioice_ice.StunProtocol(conn),
                    turn_server=conn.turn_server,
                    turn_username=conn.turn_username,
                    turn_password=conn.turn_password,
                    turn_ssl=conn.turn_ssl,
                    turn_transport=conn.turn_transport,
                )
            )
        )
    if tasks:
        done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in done:
            if task.exception() is None:
                candidate, relay_protocol = task.result()
                candidates.append(candidate)
                if relay_protocol is not None:
                    conn._protocols.append(relay_protocol)
        for task in pending:
            task.cancel()
    return candidates
