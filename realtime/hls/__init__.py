"""LL-HLS delivery: playlists, the live window per stream, its manager, HTTP handlers."""
