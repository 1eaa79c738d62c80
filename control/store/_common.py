"""Helpers shared by the Store implementations (owned by the store layer).

Keeping the arithmetic of token buckets and the JSON encoding in one place is
what lets the SQLite and Redis backends answer identically.
"""

from __future__ import annotations

import json
import math
from typing import Any

from control.store.base import TokenBucketResult


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def loads(text: str | bytes) -> Any:
    return json.loads(text)


def refill(tokens: float, last: float, now: float, rate_per_s: float, burst: int) -> float:
    """Tokens in a bucket that held `tokens` at `last`, seen at `now`."""
    return min(float(burst), tokens + max(0.0, now - last) * rate_per_s)


def bucket_result(allowed: bool, tokens: float, rate_per_s: float, burst: int) -> TokenBucketResult:
    """The answer for a bucket holding `tokens` after the take (or refusal)."""
    if rate_per_s <= 0:
        reset = 0.0 if tokens >= burst else math.inf
        retry = 0.0 if allowed else math.inf
    else:
        reset = max(0.0, (burst - tokens) / rate_per_s)
        retry = 0.0 if allowed else max(0.0, (1.0 - tokens) / rate_per_s)
    return TokenBucketResult(
        allowed=allowed,
        remaining=max(0, math.floor(tokens + 1e-9)),
        reset_s=reset,
        retry_after_s=retry,
    )
