"""How FFmpeg opens local media for onair: one file, or files read back to back
as one (`ChainedFiles`), always with the protocol and demuxer allowlists
(`INPUT_OPTIONS`). Uploads are opened nowhere else."""

from __future__ import annotations

import bisect
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import av
from av.container import InputContainer

MediaPath = str | Sequence[str]
"""One local file, or files to read back to back as one (init + segments, zero-copy)."""


class ChainedFiles(io.RawIOBase):
    """Read-only, seekable view of several files concatenated (for PyAV)."""

    def __init__(self, paths: Sequence[str]) -> None:
        super().__init__()
        self.paths = list(paths)
        self.starts: list[int] = []
        total = 0
        for p in self.paths:
            self.starts.append(total)
            total += os.path.getsize(p)
        self.size = total
        self.pos = 0
        self._index = -1
        self._file: io.BufferedReader | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self.pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(whence)
        self.pos = max(0, pos)
        return self.pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view) and self.pos < self.size:
            i = bisect.bisect_right(self.starts, self.pos) - 1
            if i != self._index:
                if self._file is not None:
                    self._file.close()
                self._file = open(self.paths[i], "rb")
                self._index = i
            assert self._file is not None
            self._file.seek(self.pos - self.starts[i])
            n = self._file.readinto(view[filled:])
            if not n:
                break
            filled += n
            self.pos += n
        return filled

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        super().close()


DEMUXERS = ",".join(
    (
        "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,flv,mpegts,avi,mpeg,ogg,asf,mxf,ivf,h264,hevc",
        # audio-only files and still images, so such uploads get a precise refusal
        "wav,mp3,aac,flac,image2,png_pipe,jpeg_pipe,gif,webp_pipe",
    )
)
"""The only containers FFmpeg may open here: media files. Not hls, concat, dash,
tee, sdp and the like, which would open other files or URLs a user names inside
an upload (image2 reads the one file it is given: onair names upload files)."""
INPUT_OPTIONS = {"protocol_whitelist": "file,pipe", "format_whitelist": DEMUXERS}
"""Every file FFmpeg opens for onair (uploads above all) goes through these."""


def open_input(path: MediaPath) -> InputContainer:
    """Open a local file, or several files as one stream, for demuxing, with the
    protocol and demuxer allowlists (`INPUT_OPTIONS`)."""
    if isinstance(path, str | Path):
        return av.open(str(path), "r", options=INPUT_OPTIONS)
    if len(path) == 1:
        return av.open(path[0], "r", options=INPUT_OPTIONS)
    return av.open(ChainedFiles(path), "r", buffer_size=1 << 20, options=INPUT_OPTIONS)
