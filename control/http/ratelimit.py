"""Token-bucket rate limits per API key (per client address when there is no
valid key), held in the Store (`take_token`) so the limit is global when the
Store is Redis.

Headers follow draft-ietf-httpapi-ratelimit-headers:
``RateLimit-Policy: "default";q=<burst>;w=<window s>`` and
``RateLimit: "default";r=<remaining>;t=<seconds until full>``. Over the limit
the answer is 429 with ``Retry-After``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from control.http.validation import ApiError
from control.store.base import Store, TokenBucketResult

POLICY = "default"


@dataclass(frozen=True, slots=True)
class RateLimitPolicy:
    rate_per_s: float
    burst: int

    @property
    def window_s(self) -> int:
        """Seconds in which `burst` requests are allowed from a full bucket at rest."""
        return max(1, math.ceil(self.burst / self.rate_per_s))

    def policy_header(self) -> str:
        return f'"{POLICY}";q={self.burst};w={self.window_s}'


def headers_for(policy: RateLimitPolicy, result: TokenBucketResult) -> dict[str, str]:
    reset = max(0, math.ceil(result.reset_s))
    return {
        "RateLimit-Policy": policy.policy_header(),
        "RateLimit": f'"{POLICY}";r={max(0, int(result.remaining))};t={reset}',
    }


async def check(store: Store, policy: RateLimitPolicy, subject: str) -> dict[str, str]:
    """Take one token for `subject`; return the headers, or raise 429 carrying them."""
    result = await store.take_token(f"rl:{subject}", policy.rate_per_s, policy.burst)
    headers = headers_for(policy, result)
    if not result.allowed:
        retry = max(1, math.ceil(result.retry_after_s))
        raise ApiError(
            429,
            "rate_limited",
            f"Too many requests; retry in {retry} s",
            headers={**headers, "Retry-After": str(retry)},
        )
    return headers
