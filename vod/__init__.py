"""What outlives the broadcast: recording, blob storage, assets, VOD playback."""
