"""Join tokens: HS256 JWTs that name one room and one identity, refused clearly."""

from __future__ import annotations

import jwt
import pytest

from realtime.rooms.tokens import JoinTokens, TokenError

SECRET = "s" * 40


def test_a_token_round_trips_its_grant() -> None:
    t = JoinTokens(SECRET)
    g = t.verify(t.issue("RM_1", "alice", can_publish=False, ttl_s=60), "RM_1")
    assert (g.identity, g.room_id, g.can_publish, g.can_subscribe) == ("alice", "RM_1", False, True)
    assert g.expires_at - g.issued_at == 60 and g.jti


def test_claims_are_the_documented_ones() -> None:
    claims = jwt.decode(
        JoinTokens(SECRET).issue("RM_1", "a"),
        SECRET,
        algorithms=["HS256"],
        options={"verify_iss": False},
    )
    assert {"sub", "room", "can_publish", "can_subscribe", "exp", "iat", "jti"} <= set(claims)


def test_a_token_for_another_room_is_refused() -> None:
    t = JoinTokens(SECRET)
    with pytest.raises(TokenError) as e:
        t.verify(t.issue("RM_1", "alice"), "RM_2")
    assert e.value.code == "token_other_room"


def test_an_expired_token_is_refused() -> None:
    now = [1_000_000.0]
    t = JoinTokens(SECRET, clock=lambda: now[0])
    tok = t.issue("RM_1", "alice", ttl_s=10)
    now[0] += 10
    with pytest.raises(TokenError) as e:
        t.verify(tok, "RM_1")
    assert e.value.code == "token_expired"


@pytest.mark.parametrize("forge", ["other_secret", "alg_none", "tampered", "garbage", "empty"])
def test_a_forged_token_is_refused(forge: str) -> None:
    t = JoinTokens(SECRET)
    good = t.issue("RM_1", "alice")
    if forge == "other_secret":
        tok = JoinTokens("o" * 40).issue("RM_1", "alice")
    elif forge == "alg_none":
        claims = jwt.decode(good, SECRET, algorithms=["HS256"], options={"verify_iss": False})
        tok = jwt.encode(claims, None, algorithm="none")  # type: ignore[arg-type]
    elif forge == "tampered":
        h, p, s = good.split(".")
        tok = f"{h}.{p[:-2]}xx.{s}"
    elif forge == "garbage":
        tok = "not.a.jwt"
    else:
        tok = ""
    with pytest.raises(TokenError) as e:
        t.verify(tok, "RM_1")
    assert e.value.code == "token_invalid"


def test_bad_issue_arguments_are_refused() -> None:
    t = JoinTokens(SECRET)
    with pytest.raises(ValueError):
        t.issue("RM_1", "no spaces allowed")
    with pytest.raises(ValueError):
        t.issue("RM_1", "a", ttl_s=0)
    with pytest.raises(ValueError):
        JoinTokens("short")
