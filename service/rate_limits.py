"""Rate limits per API key and scope, shared by every replica when Redis is configured.

The `limits` package counts hits in fixed windows: in process memory by default (one process),
or in Redis (`SKILLROUTE_REDIS_URL`), where all replicas share one counter per API key. A
request over its limit gets 429 with `Retry-After` (seconds until the window resets). If the
limit store itself is unreachable the request is let through and the failure logged: an outage
of the rate limiter must not stop the contact center.
"""

from __future__ import annotations

import math
import time

import structlog
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter

from service.problems import TooManyRequests
from service.settings import Scope, Settings

log = structlog.get_logger(__name__)


class RateLimits:
    """Checks one request against its API key's limit for the scope it uses."""

    def __init__(self, settings: Settings) -> None:
        self._items: dict[Scope, RateLimitItem] = {
            "route": parse(settings.rate_limit_route),
            "admin": parse(settings.rate_limit_admin),
            "billing": parse(settings.rate_limit_billing),
        }
        storage: Storage
        if settings.redis_url:
            storage = RedisStorage(
                "async+" + settings.redis_url,
                implementation="redispy",
                # Under the deployment's prefix: two deployments on one Redis never share counts.
                key_prefix=f"{settings.redis_prefix}-rate",
                wrap_exceptions=True,
            )
        else:
            storage = MemoryStorage()
        self.shared = settings.redis_url is not None
        self._limiter = FixedWindowRateLimiter(storage)

    async def check(self, scope: Scope, key_hash: str) -> None:
        """Count one request; raise TooManyRequests (429) when the key is over its limit."""
        item = self._items[scope]
        try:
            if await self._limiter.hit(item, scope, key_hash):
                return
            stats = await self._limiter.get_window_stats(item, scope, key_hash)
        except Exception as exc:  # the limit store is down: let the request through
            log.warning("rate_limit.store_unavailable", error=type(exc).__name__)
            return
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise TooManyRequests(
            f"this API key is over its {scope!r} rate limit ({item}); retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )
