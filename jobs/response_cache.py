"""Which cached job representations a viewer shares, and which version counters a change to a job bumps.

Counters (in the cache, see common/http_cache.py):
- `jobs:published`: every change to a job that is not a draft. Every scope sees published jobs, so every scope
  but staff's depends on it; engineers and public viewers see nothing else.
- `jobs:organization:<id>`: every change to that organization's jobs, drafts included (its members see them).
- `jobs:all`: every change; staff see every job.
A job never returns to draft, so its status after the change tells whether anyone outside its organization
could have seen it, before or after.
"""

from django.conf import settings

from accounts.models import User
from common.http_cache import (
    CacheScope,
    response_cache_enabled,
    version_counters_bump,
    version_counters_get,
    versioned_get_or_compute,
)

from .models import Job
from .selectors import JobViewerScope, engineer_sees_unlisted, job_list_scope, job_viewer_scope

PUBLISHED = "jobs:published"
ALL = "jobs:all"


def _organization(organization_id: int) -> str:
    return f"jobs:organization:{organization_id}"


def job_views_changed(*, job: Job) -> None:
    """Call after changing anything the job list or detail shows of `job` (its bid count included)."""
    counters = [ALL, _organization(job.organization_id)]
    if job.status != Job.Status.DRAFT:
        counters.append(PUBLISHED)
    version_counters_bump(counters)


def job_cache_scope(*, user: User) -> tuple[JobViewerScope, CacheScope | None]:
    """The viewer's scope (what to show) and, with the response cache on, its cache scope (who shares it)."""
    if not response_cache_enabled():
        return job_list_scope(user=user), None
    scope = job_list_scope(user=user)
    if scope.kind != "engineer":
        scope = job_viewer_scope(scope=scope)
        return scope, CacheScope(_cache_scope_name(scope), version_counters_get(_counters_for(scope)))
    # Whether the engineer sees more than the public jobs (an invitation, a bid on an invited-only job) is
    # remembered under the value of `jobs:published` read first: every invitation and bid on a published job
    # bumps it, so the first request after one decides anew. Engineer and public scopes share that counter.
    versions = version_counters_get(_counters_for(scope))

    def remembered(*, engineer: User) -> bool:
        return versioned_get_or_compute(
            f"jobs:engineer-sees-unlisted:{engineer.pk}",
            versions,
            lambda: engineer_sees_unlisted(engineer=engineer),
            settings.API_RESPONSE_CACHE_SECONDS,
        )

    scope = job_viewer_scope(scope=scope, engineer=user, sees_unlisted=remembered)
    return scope, CacheScope(_cache_scope_name(scope), versions)


def _counters_for(scope: JobViewerScope) -> list[str]:
    if scope.kind == "staff":
        return [ALL]
    return [PUBLISHED, *map(_organization, scope.organization_ids)]


def _cache_scope_name(scope: JobViewerScope) -> str:
    if scope.kind == "organizations":
        return "organizations:" + ",".join(map(str, scope.organization_ids))
    if scope.kind == "engineer":
        return f"engineer:{scope.engineer_id}"
    return scope.kind  # "staff" or "public"
