"""schemathesis hooks for the onair run: WHIP/WHEP take `application/sdp` text bodies."""

import schemathesis

schemathesis.serializer.alias("application/sdp", "text/plain")
