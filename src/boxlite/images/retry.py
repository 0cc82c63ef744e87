"""Retry policy of registry requests (kept apart so that importing it needs no HTTP stack)."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class RetryPolicy:
    """Retries for 429/5xx answers and broken connections (exponential backoff + jitter)."""

    attempts: int = 5
    base_delay: float = 0.25
    max_delay: float = 8.0

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        if retry_after and retry_after.strip().isdigit():
            return min(float(retry_after), self.max_delay)
        d = min(self.base_delay * (2.0**attempt), self.max_delay)
        return d * (0.5 + random.random() / 2)
