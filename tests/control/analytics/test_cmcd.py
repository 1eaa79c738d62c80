"""CMCD (CTA-5004) as players send it: the query argument and the four headers."""

from __future__ import annotations

from control.analytics.cmcd import cmcd_query_value, parse_cmcd


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
