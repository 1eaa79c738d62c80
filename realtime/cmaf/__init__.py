"""Our own fMP4/CMAF muxer: box helpers, init segments, moof+mdat chunks, codec config parsing."""

from realtime.cmaf.fragment import Sample, TrackRun, build_fragment
from realtime.cmaf.init import CmafTrack, build_init_segment, codecs_string

__all__ = [
    "CmafTrack",
    "Sample",
    "TrackRun",
    "build_fragment",
    "build_init_segment",
    "codecs_string",
]
