"""HLS media playlists of an asset, rendered from its manifest alone.

``render_media_playlist(manifest, suffix=...)``:
- while recording (``manifest.final`` false): a growing DVR playlist,
  ``EXT-X-PLAYLIST-TYPE:EVENT``, no ENDLIST;
- once final: ``EXT-X-PLAYLIST-TYPE:VOD`` and ``EXT-X-ENDLIST``.

Every generation gets its ``EXT-X-MAP`` and every reconnect an
``EXT-X-DISCONTINUITY``; each segment carries its ``EXT-X-PROGRAM-DATE-TIME``
at discontinuities (and at the start). URIs are relative to the playlist (the
asset's names) with ``suffix`` appended verbatim (e.g. ``"?token=..."``), so a
route serving ``/play/{id}.m3u8`` and ``/play/{id}/<name>`` maps ``<name>`` to
the blob ``<prefix>/<name>`` (``vod.manifest.media_key``).

Nothing here reads a segment: finalising is rewriting a small JSON document.
"""

from __future__ import annotations

from datetime import UTC, datetime

from vod.manifest import Manifest


def _pdt(epoch: float) -> str:
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def render_media_playlist(
    manifest: Manifest,
    *,
    suffix: str = "",
    uri_prefix: str = "",
    final: bool | None = None,
) -> str:
    """The media playlist text. ``uri_prefix`` is prepended to every URI (e.g. ``"abc/"``)."""
    is_final = manifest.final if final is None else final
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:7",
        f"#EXT-X-TARGETDURATION:{manifest.target_duration}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-DISCONTINUITY-SEQUENCE:0",
        f"#EXT-X-PLAYLIST-TYPE:{'VOD' if is_final else 'EVENT'}",
        "#EXT-X-INDEPENDENT-SEGMENTS",
    ]
    inits = {i.generation: i for i in manifest.inits}
    current_map: str | None = None
    for n, seg in enumerate(manifest.segments):
        if seg.discontinuity and n:
            lines.append("#EXT-X-DISCONTINUITY")
        init = inits.get(seg.generation)
        if init is not None and init.uri != current_map:
            lines.append(f'#EXT-X-MAP:URI="{uri_prefix}{init.uri}{suffix}"')
            current_map = init.uri
        if (n == 0 or seg.discontinuity) and seg.program_date_time > 0:
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{_pdt(seg.program_date_time)}")
        lines.append(f"#EXTINF:{seg.duration:.5f},")
        lines.append(f"{uri_prefix}{seg.uri}{suffix}")
    if is_final:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def render_multivariant_playlist(manifest: Manifest, media_uri: str, *, suffix: str = "") -> str:
    """A one-variant multivariant playlist pointing at ``media_uri`` (for players that want one)."""
    init = manifest.inits[-1] if manifest.inits else None
    attrs = [f"BANDWIDTH={max(init.bandwidth if init else 0, 1)}"]
    if init is not None and init.codecs:
        attrs.append(f'CODECS="{init.codecs}"')
    if init is not None and init.width and init.height:
        attrs.append(f"RESOLUTION={init.width}x{init.height}")
    return (
        "\n".join(
            [
                "#EXTM3U",
                "#EXT-X-VERSION:7",
                "#EXT-X-INDEPENDENT-SEGMENTS",
                "#EXT-X-STREAM-INF:" + ",".join(attrs),
                f"{media_uri}{suffix}",
            ]
        )
        + "\n"
    )


def gaps(manifest: Manifest) -> list[dict[str, float | str]]:
    """The asset's ``gaps`` field: ``[{"at_s", "duration_s", "reason"}]`` at each discontinuity."""
    return [g.to_dict() for g in manifest.gaps()]
