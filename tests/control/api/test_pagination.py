"""Lists: newest first, `limit` (default 25, max 100), `starting_after`, `has_more`."""

from __future__ import annotations

from tests.control.api.conftest import Api


async def test_pages_walk_the_whole_list_newest_first(api: Api) -> None:
    created = []
    for i in range(7):
        _, body, _ = await api.call("POST", "/v1/live-streams", json={"name": f"s{i}"})
        created.append(body["id"])
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        q = "?limit=3" + (f"&starting_after={after}" if after else "")
        status, page, _ = await api.call("GET", "/v1/live-streams" + q)
        assert status == 200
        pages += 1
        seen += [s["id"] for s in page["data"]]
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    assert pages == 3
    assert seen == list(reversed(created))


async def test_default_and_maximum_limits(api: Api) -> None:
    for _ in range(3):
        await api.call("POST", "/v1/live-streams", json={})
    _, page, _ = await api.call("GET", "/v1/live-streams")
    assert len(page["data"]) == 3 and page["has_more"] is False
    for bad in ("0", "101", "-1", "x"):
        status, body, _ = await api.call("GET", f"/v1/live-streams?limit={bad}")
        assert status == 400 and body["error"]["param"] == "limit"
    assert (await api.call("GET", "/v1/live-streams?limit=100"))[0] == 200


async def test_unknown_starting_after_is_400(api: Api) -> None:
    status, body, _ = await api.call("GET", "/v1/live-streams?starting_after=ls_nope")
    assert status == 400 and body["error"]["param"] == "starting_after"
