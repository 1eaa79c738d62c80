"""WebRTC networking for rooms, on top of `ingest.webrtc.config`.

`RtcSettings` wraps the shared `WebRtcConfig` (ICE servers, host-candidate
addresses incl. 127.0.0.1, UDP port range) and gives rooms two calls:
`new_peer_connection()` (max-bundle) and `prepare(pc)` — the latter must run after the
transceivers exist and before `setLocalDescription` (it makes aioice gather on
the configured addresses, per connection, no global patching).

aiortc's default ICE server is a public STUN host and aioice never offers
127.0.0.1 on its own: `RtcSettings.loopback()` (tests, single machine) fixes
both; production uses `RtcSettings(WebRtcConfig.from_env())`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection

from ingest.webrtc.config import WebRtcConfig, prepare_ice
from ingest.webrtc.sdp import strip_mdns_candidates


@dataclass(frozen=True, slots=True)
class RtcSettings:
    config: WebRtcConfig = field(default_factory=WebRtcConfig)

    @classmethod
    def loopback(cls) -> RtcSettings:
        return cls(WebRtcConfig.loopback())

    def new_peer_connection(self) -> RTCPeerConnection:
        # max-bundle: with aiortc's default ("balanced"), a first offer holding two
        # transceivers of one kind leaves the second on a transport that the BUNDLE
        # answer then discards (its sender never starts).
        base = self.config.rtc_configuration()
        return RTCPeerConnection(
            RTCConfiguration(iceServers=base.iceServers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )

    def prepare(self, pc: RTCPeerConnection) -> None:
        prepare_ice(pc, self.config)

    def remote_sdp(self, sdp: str) -> str:
        """A participant's SDP without candidates the server must not probe
        (private addresses, unless allowed); mDNS names stay, as before."""
        return strip_mdns_candidates(
            sdp, allow_private=self.config.allow_private_candidates, keep_mdns=True
        )
