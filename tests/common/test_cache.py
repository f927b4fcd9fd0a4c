"""The project's Redis cache backend and the counter the throttles and the bearer-failure window use."""

import threading

import pytest
from django.core.cache import cache, caches
from django.core.cache.backends.filebased import FileBasedCache

from common import cache as project_cache
from common.cache import ProjectRedisCache, counter_incr


def test_the_suite_runs_on_the_project_backend():
    assert isinstance(caches["default"], ProjectRedisCache)


def test_one_client_object_serves_every_call():
    backend = caches["default"]._cache
    assert backend.get_client("a") is backend.get_client("b")
    assert backend.get_client("a", write=True) is backend.get_client("b", write=True)


def test_the_counter_starts_at_one_and_carries_its_expiry():
    assert [counter_incr("window", timeout=30) for _ in range(3)] == [1, 2, 3]
    assert cache.get("window") == 3  # readable through the cache API, like any counter Django made
    client = caches["default"]._cache.get_client(write=True)
    assert 0 < client.ttl(cache.make_key("window")) <= 30


def test_the_counter_is_atomic_under_concurrent_increments():
    results = []

    def bump():
        results.extend(counter_incr("contended", timeout=30) for _ in range(50))

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == list(range(1, 401))


def test_other_backends_count_with_add_and_incr(tmp_path, monkeypatch):
    file_cache = FileBasedCache(str(tmp_path), {})
    monkeypatch.setattr(project_cache, "cache", file_cache)
    assert [counter_incr("window", timeout=30) for _ in range(3)] == [1, 2, 3]
    file_cache.delete("window")  # expired between the add and the incr
    assert counter_incr("window", timeout=30) == 1


@pytest.fixture(autouse=True)
def _clean_keys():
    yield
    cache.delete_many(["window", "contended"])
