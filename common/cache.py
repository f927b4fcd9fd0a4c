"""The Redis cache backend the project runs on, and a counter that works on every configured backend.

Django's `RedisCache` builds a new `redis.Redis` client object for every cache call (its connection pool is
shared, the client object is not); on the job list's cached path that construction was about a quarter of the
request's CPU. A client is thread-safe over its pool, so one per pool serves every call of the process.
"""

from django.core.cache import cache
from django.core.cache.backends.redis import RedisCache, RedisCacheClient


class ReusedClientRedisCacheClient(RedisCacheClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._clients = {}

    def get_client(self, key=None, *, write=False):
        index = self._get_connection_pool_index(write)
        client = self._clients.get(index)
        if client is None:
            client = self._clients[index] = self._client(connection_pool=self._get_connection_pool(write))
        return client

    def counter_incr(self, key: str, timeout: int) -> int:
        """Add one to `key`, creating it at 0 with `timeout` first: one round trip, atomic."""
        pipeline = self.get_client(key, write=True).pipeline(transaction=True)
        pipeline.set(key, 0, ex=timeout, nx=True)
        pipeline.incr(key)
        return pipeline.execute()[1]


class ProjectRedisCache(RedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = ReusedClientRedisCacheClient

    def counter_incr(self, key: str, timeout: int) -> int:
        return self._cache.counter_incr(self.make_and_validate_key(key), timeout)


def counter_incr(key: str, *, timeout: int) -> int:
    """A counter that starts at 1 and expires `timeout` seconds after its first increment."""
    atomic_incr = getattr(cache, "counter_incr", None)
    if atomic_incr is not None:
        return atomic_incr(key, timeout)
    # Other backends (the embedded defaults' file cache): add, else increment, else (expired between) add.
    if cache.add(key, 1, timeout=timeout):
        return 1
    try:
        return cache.incr(key)
    except ValueError:
        cache.add(key, 1, timeout=timeout)
        return 1
