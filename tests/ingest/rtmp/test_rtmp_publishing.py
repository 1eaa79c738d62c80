"""A connection's publish state moves only as the transition table allows."""

from __future__ import annotations

import pytest

from ingest.rtmp.errors import ProtocolError
from ingest.rtmp.publishing import (
    InvalidPublishMove,
    PublishAction,
    PublishState,
    publish_transition,
)

A = PublishAction
S = PublishState


def run(*actions: PublishAction) -> PublishState:
    state = S.IDLE
    for action in actions:
        state = publish_transition(state, action)
    return state


def test_a_granted_publish_goes_live_and_a_codec_change_restarts_it() -> None:
    assert run(A.PUBLISH) is S.AUTHORIZING
    assert run(A.PUBLISH, A.GRANT) is S.GRANTED
    assert run(A.PUBLISH, A.GRANT, A.START) is S.LIVE
    assert run(A.PUBLISH, A.GRANT, A.START, A.RESTART, A.START) is S.LIVE


def test_unpublish_and_denial_return_to_idle_and_a_new_publish_may_follow() -> None:
    assert run(A.PUBLISH, A.DENY) is S.IDLE
    assert run(A.PUBLISH, A.GRANT, A.END) is S.IDLE
    assert run(A.PUBLISH, A.GRANT, A.START, A.END, A.PUBLISH) is S.AUTHORIZING
    assert run(A.END) is S.IDLE  # an unpublish with nothing published


@pytest.mark.parametrize("state", list(PublishState))
def test_close_is_allowed_from_anywhere_and_final(state: PublishState) -> None:
    assert publish_transition(state, A.CLOSE) is S.CLOSED
    for action in PublishAction:
        if action is not A.CLOSE:
            with pytest.raises(InvalidPublishMove):
                publish_transition(S.CLOSED, action)


@pytest.mark.parametrize(
    ("actions", "bad"),
    [
        ((A.PUBLISH, A.GRANT, A.START), A.PUBLISH),  # a second publish while live
        ((A.PUBLISH,), A.START),  # media before the authority answered
        ((), A.GRANT),  # a grant nobody asked for
        ((A.PUBLISH, A.GRANT), A.RESTART),  # nothing live to restart
    ],
)
def test_moves_the_table_does_not_name_are_protocol_errors(
    actions: tuple[PublishAction, ...], bad: PublishAction
) -> None:
    with pytest.raises(InvalidPublishMove) as err:
        publish_transition(run(*actions), bad)
    assert isinstance(err.value, ProtocolError) and bad.value in str(err.value)
