"""Live media going out: CMAF segmenter, LL-HLS, WHEP, rooms."""
