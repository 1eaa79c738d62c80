"""Signing keys: the private key is shown once and signs RS256 tokens that the
stored public key verifies; only the public half is kept."""

from __future__ import annotations

import time

import jwt

from tests.control.api.conftest import Api


async def test_private_key_shown_once_and_verifiable(api: Api) -> None:
    status, created, _ = await api.call("POST", "/v1/signing-keys")
    assert status == 201
    private = created["private_key"]
    assert private.startswith("-----BEGIN PRIVATE KEY-----")
    token = jwt.encode(
        {"sub": "playback123", "aud": "v", "exp": int(time.time()) + 60},
        private,
        algorithm="RS256",
        headers={"kid": created["id"]},
    )
    status, got, _ = await api.call("GET", f"/v1/signing-keys/{created['id']}")
    assert status == 200 and "private_key" not in got
    claims = jwt.decode(token, got["public_key"], algorithms=["RS256"], audience="v")
    assert claims["sub"] == "playback123"
    assert jwt.get_unverified_header(token)["kid"] == created["id"]
    rec = await api.store.get("signing_keys", created["id"])
    assert rec is not None and "PRIVATE" not in str(rec.data)

    _, listed, _ = await api.call("GET", "/v1/signing-keys")
    assert [k["id"] for k in listed["data"]] == [created["id"]]
    assert "private_key" not in listed["data"][0]

    assert (await api.call("DELETE", f"/v1/signing-keys/{created['id']}"))[0] == 204
    assert (await api.call("GET", f"/v1/signing-keys/{created['id']}"))[0] == 404


async def test_signing_key_rejects_a_body(api: Api) -> None:
    status, body, _ = await api.call("POST", "/v1/signing-keys", json={"bits": 4096})
    assert status == 422 and body["error"]["param"] == "bits"
