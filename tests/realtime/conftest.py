"""Fixtures for realtime tests: real H.264/AAC clips made by ffmpeg (once per session)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.realtime.media import make_flv


@pytest.fixture(scope="session")
def av_flv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 s of 320x240 30 fps H.264 (B-frames, 1 s GOP) + AAC 48 kHz."""
    return make_flv(tmp_path_factory.mktemp("media") / "av.flv", seconds=4.0)


@pytest.fixture(scope="session")
def long_flv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 s, no B-frames (what zerolatency publishers send), 1 s GOP."""
    return make_flv(tmp_path_factory.mktemp("media") / "long.flv", seconds=6.0, bframes=False)
