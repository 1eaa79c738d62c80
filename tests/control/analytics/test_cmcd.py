"""CMCD (CTA-5004) as players send it: the query argument and the four headers."""

from __future__ import annotations

import pytest

from control.analytics.cmcd import cmcd_query_value, parse_cmcd, session_id, view_cmcd


def test_hls_js_query_argument_is_read() -> None:
    # what hls.js 1.6 puts in ?CMCD= (decoded)
    cmcd = parse_cmcd(
        'bl=2100,br=1200,bs,cid="pid1",d=200,mtp=24000,ot=v,sf=h,sid="s-1",st=l,su,tb=3000,ltc=900'
    )
    assert cmcd is not None
    assert (cmcd.sid, cmcd.cid, cmcd.br, cmcd.bl, cmcd.d) == ("s-1", "pid1", 1200, 2100, 200)
    assert cmcd.bs and cmcd.su
    assert (cmcd.ot, cmcd.sf, cmcd.st, cmcd.tb, cmcd.mtp, cmcd.ltc) == (
        "v",
        "h",
        "l",
        3000,
        24000,
        900,
    )


def test_headers_spread_the_keys_and_merge_with_the_query() -> None:
    cmcd = parse_cmcd(
        None,
        {
            "cmcd-request": "bl=500,mtp=9000",
            "cmcd-object": "br=800,d=2000,ot=v",
            "cmcd-status": "bs",
            "cmcd-session": 'sid="abc",st=v,pr=1.5',
        },
    )
    assert cmcd is not None
    assert (cmcd.sid, cmcd.br, cmcd.bl, cmcd.st, cmcd.pr, cmcd.bs) == (
        "abc",
        800,
        500,
        "v",
        1.5,
        True,
    )


def test_quoted_commas_and_escapes_stay_in_the_string() -> None:
    cmcd = parse_cmcd('cid="a,b",sid="q\\"x"')
    assert cmcd is not None and cmcd.cid == "a,b" and cmcd.sid == 'q"x'


def test_malformed_pairs_are_ignored_not_refused() -> None:
    cmcd = parse_cmcd('br=fast,bl=-1,sid=unquoted,ot=" ",pr=nan,zz=1,d=300')
    assert cmcd is not None
    assert cmcd.br is None and cmcd.bl is None and cmcd.sid is None and cmcd.ot is None
    assert cmcd.pr is None and cmcd.d == 300
    assert parse_cmcd("nonsense,,=,x=") is None
    assert parse_cmcd(None, {"user-agent": "x"}) is None
    assert parse_cmcd('sid="' + "x" * 65 + '"') is None  # CTA-5004 caps strings at 64


def test_the_query_value_is_found_in_a_raw_query() -> None:
    assert cmcd_query_value("token=t&CMCD=br%3D800%2Csid%3D%22s%22") == 'br=800,sid="s"'
    assert cmcd_query_value("CMCD=bl%3D1&_HLS_msn=3") == "bl=1"
    assert cmcd_query_value("XCMCD=bl%3D1") is None
    assert cmcd_query_value("_HLS_msn=3") is None


@pytest.mark.parametrize(
    "value",
    [
        'bl=2100,br=1200,bs,cid="pid1",d=200,mtp=24000,ot=v,sf=h,sid="s-1",st=l,su,tb=3000,ltc=900',
        'sid="a,br=5",br=700',  # a key inside a string is not the key
        'cid="x",sid="q\\"x",ot=m',
        "bs=true,br=12",
        "bsx,brr=1,ltc=abc,sid=unquoted",
        "d=200",
    ],
)
def test_the_view_keys_are_read_as_the_full_parser_reads_them(value: str) -> None:
    full, fast = parse_cmcd(value), view_cmcd(value)
    if fast is None:
        assert full is None or all(
            getattr(full, k) in (None, False) for k in ("sid", "br", "ltc", "bs", "ot")
        )
        return
    assert full is not None
    for key in ("sid", "br", "ltc", "bs", "ot"):
        assert getattr(fast, key) == getattr(full, key), key


def test_the_view_keys_come_from_headers_too() -> None:
    cmcd = view_cmcd(None, {"cmcd-session": 'sid="h"', "cmcd-object": "br=640,ot=v"})
    assert cmcd is not None and (cmcd.sid, cmcd.br, cmcd.ot) == ("h", 640, "v")


def test_the_session_id_is_found_without_parsing_the_rest() -> None:
    encoded = "bl%3D1%2Csid%3D%22abc-1%22%2Cst%3Dl"
    assert session_id(encoded, None) == "abc-1"
    assert session_id('bl=1,sid="abc-2"', None) == "abc-2"
    assert session_id(None, 'st=l,sid="abc-3"') == "abc-3"
    assert session_id("xsid%3D%22no%22", None) is None
    assert session_id('sid="a\\"b"', None) is None  # escapes: the full parser's job
    assert session_id(None, None) is None
