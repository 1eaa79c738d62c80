"""SRT ingest: MPEG-TS publishers over SRT, through the system's libsrt."""
