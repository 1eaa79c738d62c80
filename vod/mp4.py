"""MP4 download: an asset remuxed (no re-encode) into one progressive MP4 with faststart.

``remux_to_mp4(sources, out_path)`` is a plain function for a process pool:
``sources`` are ``(path, offset_s)`` pairs of local files (one per run of
segments of the same generation, init first — ``vod.jobs`` writes them
streaming from the BlobStore), the output is written with
``movflags=+faststart`` (moov before mdat) so browsers can start playing it
while it downloads. Across reconnects the timeline is continuous, as in the
VOD playlist. Limitation: all generations share the first one's codec
configuration (true for a reconnecting encoder with unchanged settings).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import av

from vod.inputs import MediaPath
from vod.media import Source, copy_packets


def remux_to_mp4(sources: Sequence[tuple[MediaPath, float]], out_path: str) -> dict[str, Any]:
    """Write ``out_path`` (MP4, faststart). Returns {duration_s, size, has_video, has_audio}."""
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    output = av.open(out_path, "w", format="mp4", options={"movflags": "+faststart"})
    try:
        stats = copy_packets([Source(p, o) for p, o in sources], output)
    finally:
        output.close()
    return {
        "duration_s": round(stats.duration_s, 3),
        "size": Path(out_path).stat().st_size,
        "has_video": stats.has_video,
        "has_audio": stats.has_audio,
    }
