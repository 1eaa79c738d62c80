"""Where one RTMP connection is with its publication: one Enum, one transition.

The sans-IO `RtmpSession` knows the protocol's states; the driver
(`ingest.rtmp.server.RtmpConnection`) also has to know where the publish it
asked the authority about stands, and whether a hub publication takes the
media. That is `PublishState`, moved only by `publish_transition`:

    IDLE --publish--> AUTHORIZING --grant--> GRANTED --start--> LIVE
                           |  deny                ^  restart (new tracks) |
                           v                      +-----------------------+
                         IDLE        GRANTED / LIVE --end (unpublish)--> IDLE
    any --close--> CLOSED (final)

While AUTHORIZING the driver stops reading (the authority's answer decides
what the next bytes mean); GRANTED holds media until the tracks are known;
LIVE writes every unit into the hub.
"""

from __future__ import annotations

from enum import Enum

from ingest.rtmp.errors import ProtocolError


class PublishState(Enum):
    IDLE = "idle"
    """Commands only: no publish asked, or the last one ended."""
    AUTHORIZING = "authorizing"
    """A publish was asked; the authority has not answered yet."""
    GRANTED = "granted"
    """The publish was accepted; media waits until the tracks are known."""
    LIVE = "live"
    """A hub publication takes the media."""
    CLOSED = "closed"
    """The connection is closing or gone."""


class PublishAction(Enum):
    PUBLISH = "publish"
    GRANT = "grant"
    DENY = "deny"
    START = "start"
    RESTART = "restart"
    END = "end"
    CLOSE = "close"


class InvalidPublishMove(ProtocolError):
    """The peer asked for something its connection's state does not allow."""

    def __init__(self, state: PublishState, action: PublishAction) -> None:
        super().__init__(f"cannot {action.value} while {state.value}")
        self.state = state
        self.action = action


_S = PublishState
_A = PublishAction
_MOVES: dict[tuple[PublishState, PublishAction], PublishState] = {
    (_S.IDLE, _A.PUBLISH): _S.AUTHORIZING,
    (_S.AUTHORIZING, _A.GRANT): _S.GRANTED,
    (_S.AUTHORIZING, _A.DENY): _S.IDLE,
    (_S.GRANTED, _A.START): _S.LIVE,
    (_S.LIVE, _A.RESTART): _S.GRANTED,
    (_S.GRANTED, _A.END): _S.IDLE,
    (_S.LIVE, _A.END): _S.IDLE,
    (_S.IDLE, _A.END): _S.IDLE,
}


def publish_transition(state: PublishState, action: PublishAction) -> PublishState:
    """The state after `action`, or `InvalidPublishMove`. Closing is always allowed."""
    if action is PublishAction.CLOSE:
        return PublishState.CLOSED
    try:
        return _MOVES[state, action]
    except KeyError:
        raise InvalidPublishMove(state, action) from None
