"""The control plane's domain: typed records and the services that change them.

Each record collection is declared once (`records.Collection`: its name, its
unique indexes and its tags) in the module that owns it: live streams and
playback ids (``live_streams``), assets and uploads (``assets``, ``uploads``),
rooms' stored state (``rooms``), playback policy and signed playback
(``playback``), webhook endpoints (``webhook_endpoints``), API keys
(``api_keys``), signing keys (``signing_keys``). Services change records only
through the outbox (`control.outbox.Outbox`: one commit for the change and its
events; `compare_and_set` for every read-modify-write) and report failures as
`errors.DomainError`s, which the HTTP adapter turns into statuses with one
table. Nothing here imports aiohttp.
"""
