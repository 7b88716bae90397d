"""The shared rate store on Redis (the ``redis`` extra): the asyncio server's tunnel limits across instances.

The buckets and the script are the core's (:data:`socks_sansio.TUNNEL_ADMIT_SCRIPT`,
through the session's :class:`~socks_sansio.server_operations.AdmitShared`); this
module only runs the script with the ``redis`` package's asyncio client, one
atomic ``EVALSHA`` per admission, each bounded by the configured time-out.
Every failure (Redis down, too slow, an error reply) is raised as
``ConnectionError``, which the session turns into the configured fail-open or
fail-closed answer.
"""

from __future__ import annotations

import asyncio
from typing import Any, final

from socks_sansio import TUNNEL_ADMIT_SCRIPT

__all__ = ["RedisRateStore"]


@final
class RedisRateStore:
    """Tunnel admissions through a Redis server at *url* (``redis://HOST:PORT/DB``).

    Args:
        url: the Redis URL.
        timeout: seconds a call may take (connecting included) before it counts as failed.

    Raises:
        ImportError: the ``redis`` package is missing (the message names the extra).
    """

    def __init__(self, url: str, timeout: float) -> None:
        try:
            import redis.asyncio
            from redis.exceptions import RedisError
        except ImportError as exc:  # pragma: no cover - the config checks the extra first
            raise ImportError("--rate-store needs the 'redis' extra: pip install 'socks-sansio[redis]'") from exc
        self._errors: tuple[type[BaseException], ...] = (RedisError, OSError, asyncio.TimeoutError)
        self._client: Any = redis.asyncio.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry_on_timeout=False
        )
        self._script: Any = self._client.register_script(TUNNEL_ADMIT_SCRIPT)
        self._timeout = timeout

    async def admit(self, buckets: tuple[tuple[str, float, float], ...], timeout: float | None = None) -> float:
        """Run the admission script: the seconds to wait, 0 when the tunnel is admitted.

        Raises:
            ConnectionError: the store did not answer within the time-out, or answered with an error.
        """
        keys = [key for key, _, _ in buckets]
        args = [value for _, rate, burst in buckets for value in (repr(rate), repr(burst))]
        try:
            answer = await asyncio.wait_for(self._script(keys=keys, args=args), timeout or self._timeout)
        except self._errors as exc:
            raise ConnectionError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from exc
        return float(answer)

    async def aclose(self) -> None:
        """Close the connections to Redis."""
        await self._client.aclose()
