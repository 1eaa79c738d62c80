"""Viewer analytics: what players report (CMCD on playback requests, beacons),
the views a node sees (`tracker`), how they merge across nodes (`view`), and
the metrics over time the API answers (`series`)."""
