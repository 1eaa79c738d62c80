"""Publishers coming in (RTMP, WHIP) and the live hub they write to."""
