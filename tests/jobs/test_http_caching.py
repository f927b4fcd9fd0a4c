"""Conditional GETs and the job response cache, on PostgreSQL and Redis.

What a viewer gets from the cache must be exactly what the uncached path would give them now: every change a
scope can see reaches that scope's next request, and no viewer ever gets a representation built for a scope
they are not in.
"""

import threading

import pytest
import redis
from django.conf import settings as django_settings
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from accounts.services import api_token_create, api_token_revoke
from jobs.models import Job
from jobs.services.bids import bid_place, bid_withdraw
from jobs.services.jobs import job_attach_hidden_inputs, job_attach_package, job_cancel, job_publish, job_update
from jobs.services.submissions import submission_create
from tests.factories import (
    CompanyAdminFactory,
    CompanyMemberFactory,
    EngineerFactory,
    JobFactory,
    StaffFactory,
    funded_contract,
    make_tar_gz,
    open_job,
)
from tests.factories.archives import package_archive, upload
from tests.jobs.conftest import candidate_upload
from verification.models import VerificationRun
from verification.services import verification_run_heartbeat, verification_run_start

pytestmark = pytest.mark.django_db

LIST = "/api/v1/jobs/"


def _ids(response) -> set[int]:
    assert response.status_code == 200, response.content
    return {job["id"] for job in response.json()["results"]}


def _bid(engineer, job):
    return bid_place(actor=engineer, job=job, amount=150_000, estimated_days=5, proposal="Fuse the kernels.")


@pytest.fixture
def cache_on(settings):
    settings.API_RESPONSE_CACHE_SECONDS = 300


@pytest.fixture
def world(db, api_client_for):
    """Two companies, two engineers and an operator, each with a client; one open public job."""

    class World:
        pass

    w = World()
    w.admin = CompanyAdminFactory()
    w.organization = w.admin.memberships.get().organization
    w.member = CompanyMemberFactory(organization=w.organization)
    w.other_admin = CompanyAdminFactory()
    w.engineer, w.other_engineer = EngineerFactory(), EngineerFactory()
    w.staff = StaffFactory()
    w.public_job = open_job(admin=w.admin)
    w.clients = {
        name: api_client_for(getattr(w, name))
        for name in ("admin", "member", "other_admin", "engineer", "other_engineer", "staff")
    }
    return w


# Conditional requests.


def test_list_and_detail_carry_a_strong_etag_and_answer_304_while_unchanged(world, cache_on):
    client = world.clients["engineer"]
    for url in (LIST, f"{LIST}{world.public_job.pk}/"):
        first = client.get(url)
        etag = first["ETag"]
        assert first.status_code == 200 and etag.startswith('"') and not etag.startswith("W/")
        assert {"Authorization", "Cookie", "Accept"} <= {v.strip() for v in first["Vary"].split(",")}
        assert "private" in first["Cache-Control"]
        not_modified = client.get(url, HTTP_IF_NONE_MATCH=etag)
        assert not_modified.status_code == 304 and not_modified.content == b""
        assert not_modified["ETag"] == etag
        assert {"Authorization", "Cookie"} <= {v.strip() for v in not_modified["Vary"].split(",")}
        assert client.get(url, HTTP_IF_NONE_MATCH='"something-else"').status_code == 200


def test_etag_changes_with_publish_and_bids(world, cache_on):
    admin, engineer = world.clients["admin"], world.clients["engineer"]
    detail = f"{LIST}{world.public_job.pk}/"
    list_etag, detail_etag = admin.get(LIST)["ETag"], engineer.get(detail)["ETag"]
    engineer_list_etag = engineer.get(LIST)["ETag"]

    _bid(world.engineer, world.public_job)
    after_bid = engineer.get(detail, HTTP_IF_NONE_MATCH=detail_etag)
    assert after_bid.status_code == 200 and after_bid.json()["bid_count"] == 1
    assert after_bid["ETag"] != detail_etag
    assert admin.get(LIST, HTTP_IF_NONE_MATCH=list_etag).status_code == 200

    after_bid_list = engineer.get(LIST, HTTP_IF_NONE_MATCH=engineer_list_etag)
    assert after_bid_list.status_code == 200
    engineer_list_etag = after_bid_list["ETag"]
    draft = JobFactory(organization=world.organization, created_by=world.admin)
    job_update(actor=world.admin, job=draft, title="Not yet public")
    listed = engineer.get(LIST, HTTP_IF_NONE_MATCH=engineer_list_etag)
    assert listed.status_code == 304  # a draft changes nothing an engineer sees
    job_attach_package(actor=world.admin, job=draft, upload=package_archive())
    job_attach_hidden_inputs(actor=world.admin, job=draft, upload=upload(make_tar_gz({"in-0.json": b"[1]"})))
    job_publish(actor=world.admin, job=draft)
    published = engineer.get(LIST, HTTP_IF_NONE_MATCH=engineer_list_etag)
    assert published.status_code == 200 and draft.pk in _ids(published)
    assert published["ETag"] != engineer_list_etag


def test_no_304_across_viewers_who_see_different_lists(world, cache_on):
    JobFactory(organization=world.organization, created_by=world.admin)  # a draft only its company sees
    company_etag = world.clients["admin"].get(LIST)["ETag"]
    for viewer in ("engineer", "other_admin", "other_engineer"):
        response = world.clients[viewer].get(LIST, HTTP_IF_NONE_MATCH=company_etag)
        assert response.status_code == 200, viewer
        assert response["ETag"] != company_etag


def test_etag_without_the_response_cache_too(world, settings):
    settings.API_RESPONSE_CACHE_SECONDS = 0
    client = world.clients["engineer"]
    etag = client.get(LIST)["ETag"]
    assert client.get(LIST, HTTP_IF_NONE_MATCH=etag).status_code == 304
    _bid(world.engineer, world.public_job)
    assert client.get(LIST, HTTP_IF_NONE_MATCH=etag).status_code == 200


def test_verification_status_answers_304_until_progress_moves(
    db, api_client_for, dispatched, django_capture_on_commit_callbacks
):
    contract = funded_contract()
    with django_capture_on_commit_callbacks(execute=True):
        submission = submission_create(actor=contract.engineer, contract=contract, upload=candidate_upload())
    run = VerificationRun.objects.get(subject=f"submission:{submission.pk}")
    token = next(d.token for d in reversed(dispatched) if d.run_id == run.pk)
    engineer, company = (
        api_client_for(contract.engineer),
        api_client_for(contract.job.organization.memberships.get().user),
    )
    url = f"/api/v1/submissions/{submission.pk}/verification/"
    etag = engineer.get(url)["ETag"]
    assert engineer.get(url, HTTP_IF_NONE_MATCH=etag).status_code == 304
    verification_run_start(run_id=run.pk, token=token)
    started = engineer.get(url, HTTP_IF_NONE_MATCH=etag)
    assert started.status_code == 200 and started["ETag"] != etag
    verification_run_heartbeat(run_id=run.pk, token=token, progress={"pairs_done": 3})
    progressed = engineer.get(url, HTTP_IF_NONE_MATCH=started["ETag"])
    assert progressed.status_code == 200 and progressed["ETag"] != started["ETag"]
    assert progressed.json()["results"][0]["progress"]["pairs_done"] == 3
    assert engineer.get(url, HTTP_IF_NONE_MATCH=progressed["ETag"]).status_code == 304
    assert {"Authorization", "Cookie"} <= {v.strip() for v in progressed["Vary"].split(",")}
    # The company sees the same run; it gets a 304 for that ETag only if its body is byte-identical.
    company_view = company.get(url, HTTP_IF_NONE_MATCH=progressed["ETag"])
    if company_view.status_code == 200:
        assert company_view.content != progressed.content


# The response cache: scopes.


def test_engineers_never_get_each_others_or_a_companys_cached_view(world, cache_on):
    invited_job = open_job(admin=world.admin, visibility=Job.Visibility.INVITED)
    job_update(actor=world.admin, job=invited_job, invited_engineers=[world.engineer])
    draft = JobFactory(organization=world.organization, created_by=world.admin)
    for _ in range(2):  # the second round is served from the cache
        company = _ids(world.clients["admin"].get(LIST))
        invited = _ids(world.clients["engineer"].get(LIST))
        uninvited = _ids(world.clients["other_engineer"].get(LIST))
        other_company = _ids(world.clients["other_admin"].get(LIST))
        assert {world.public_job.pk, invited_job.pk, draft.pk} <= company
        assert invited == {world.public_job.pk, invited_job.pk}
        assert uninvited == other_company == {world.public_job.pk}
    other = world.clients["other_engineer"]
    assert other.get(f"{LIST}{invited_job.pk}/").status_code == 404
    assert world.clients["engineer"].get(f"{LIST}{invited_job.pk}/").status_code == 200
    assert other.get(f"{LIST}{invited_job.pk}/").status_code == 404


def test_a_bid_on_an_invite_only_job_keeps_it_in_that_engineers_view_only(world, cache_on):
    invited_job = open_job(admin=world.admin, visibility=Job.Visibility.INVITED)
    job_update(actor=world.admin, job=invited_job, invited_engineers=[world.engineer])
    bid = _bid(world.engineer, invited_job)
    job_update(actor=world.admin, job=invited_job, invited_engineers=[])  # uninvited, but the bid stays
    assert invited_job.pk in _ids(world.clients["engineer"].get(LIST))
    assert invited_job.pk not in _ids(world.clients["other_engineer"].get(LIST))
    bid_withdraw(actor=world.engineer, bid=bid)
    assert invited_job.pk in _ids(world.clients["engineer"].get(LIST))  # a withdrawn bid still shows its job
    assert invited_job.pk not in _ids(world.clients["other_engineer"].get(LIST))


def test_every_change_reaches_the_next_request_of_every_scope(world, cache_on):
    viewers = ("admin", "member", "other_admin", "engineer", "other_engineer", "staff")

    def lists():
        return {viewer: world.clients[viewer].get(LIST).json() for viewer in viewers}

    def counts(job):
        return {
            viewer: next((j["bid_count"] for j in page["results"] if j["id"] == job.pk), None)
            for viewer, page in lists().items()
        }

    lists()  # every scope warm
    bid = _bid(world.engineer, world.public_job)
    assert set(counts(world.public_job).values()) == {1}
    _bid(world.other_engineer, world.public_job)
    assert set(counts(world.public_job).values()) == {2}
    bid_withdraw(actor=world.engineer, bid=bid)
    assert set(counts(world.public_job).values()) == {1}

    job_update(actor=world.admin, job=world.public_job, title="Faster attention")
    assert {page["results"][0]["title"] for page in lists().values()} == {"Faster attention"}
    detail = f"{LIST}{world.public_job.pk}/"
    assert {world.clients[v].get(detail).json()["title"] for v in viewers} == {"Faster attention"}

    job_cancel(actor=world.admin, job=world.public_job)
    assert {world.clients[v].get(detail).json()["status"] for v in viewers} == {"cancelled"}
    assert {
        next(j["status"] for j in page["results"] if j["id"] == world.public_job.pk) for page in lists().values()
    } == {"cancelled"}


def test_an_invitation_reaches_the_invited_engineers_next_request(world, cache_on):
    invited_job = open_job(admin=world.admin, visibility=Job.Visibility.INVITED)
    assert invited_job.pk not in _ids(world.clients["engineer"].get(LIST))
    job_update(actor=world.admin, job=invited_job, invited_engineers=[world.engineer])
    assert invited_job.pk in _ids(world.clients["engineer"].get(LIST))
    job_update(actor=world.admin, job=invited_job, invited_engineers=[])
    assert invited_job.pk not in _ids(world.clients["engineer"].get(LIST))


def test_drafts_change_only_their_organizations_scope(world, cache_on):
    engineer = world.clients["engineer"]
    engineer.get(LIST)
    with CaptureQueriesContext(connection) as warm:
        engineer.get(LIST)
    JobFactory(organization=world.organization, created_by=world.admin)
    draft = Job.objects.filter(status=Job.Status.DRAFT).get()
    job_update(actor=world.admin, job=draft, title="Still a draft")
    with CaptureQueriesContext(connection) as after_draft_edit:
        engineer.get(LIST)
    assert len(after_draft_edit) == len(warm)  # still a hit: no list queries
    assert draft.pk in _ids(world.clients["member"].get(LIST))


# The response cache: it is really used, it can be switched off, it keeps what runs on every request.


def _list_queries(captured) -> list[str]:
    return [q["sql"] for q in captured.captured_queries if "COUNT(" in q["sql"] or 'FROM "jobs_job"' in q["sql"]]


def test_a_hit_runs_no_list_queries_and_serves_the_same_bytes(world, cache_on, settings):
    client = world.clients["admin"]
    urls = [LIST, f"{LIST}?page_size=1", f"{LIST}?ordering=-budget_max&search=model", f"{LIST}{world.public_job.pk}/"]
    for url in urls:
        miss = client.get(url)
        with CaptureQueriesContext(connection) as captured:
            hit = client.get(url)
        assert hit.content == miss.content and hit["Content-Type"] == miss["Content-Type"]
        assert hit["ETag"] == miss["ETag"]
        assert _list_queries(captured) == [], url
        settings.API_RESPONSE_CACHE_SECONDS = 0
        uncached = client.get(url)
        settings.API_RESPONSE_CACHE_SECONDS = 300
        assert uncached.content == hit.content


def test_switched_off_by_a_setting(world, settings):
    settings.API_RESPONSE_CACHE_SECONDS = 0
    client = world.clients["engineer"]
    client.get(LIST)
    # Written behind the services' back, so no counter moves: only an uncached read can see it.
    Job.objects.filter(pk=world.public_job.pk).update(title="Changed in place")
    with CaptureQueriesContext(connection) as captured:
        response = client.get(LIST)
    assert response.json()["results"][0]["title"] == "Changed in place"
    assert _list_queries(captured)

    settings.API_RESPONSE_CACHE_SECONDS = 300
    client.get(LIST)
    Job.objects.filter(pk=world.public_job.pk).update(title="Changed again")
    assert client.get(LIST).json()["results"][0]["title"] == "Changed in place"  # served from the cache


def test_authentication_and_throttling_still_run_on_hits(world, cache_on, settings, api_client_for):
    issued = api_token_create(user=world.engineer, name="revocable")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.secret}")
    assert client.get(LIST).status_code == 200
    assert client.get(LIST).status_code == 200  # cached now
    api_token_revoke(user=world.engineer, token_id=issued.token.pk)
    assert client.get(LIST).status_code == 401
    assert APIClient().get(LIST).status_code == 401

    settings.REST_FRAMEWORK = {
        **django_settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"anon": "100/min", "user": "3/min"},
    }
    throttled = api_client_for(world.other_engineer)
    statuses = [throttled.get(LIST).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]


def test_cache_keys_hold_no_secrets(world, cache_on, api_client_for):
    issued = api_token_create(user=world.engineer, name="watched")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.secret}")
    client.get(LIST)
    client.get(f"{LIST}{world.public_job.pk}/")
    store = redis.Redis.from_url(django_settings.REDIS_URL)
    keys = [key.decode() for key in store.scan_iter(count=1000)]
    assert any("http-cache:entry:" in key for key in keys)
    for key in keys:
        assert issued.secret not in key and issued.secret[4:16] not in key
        assert world.engineer.email not in key
    for key in keys:
        if store.type(key) == b"string":
            assert issued.secret.encode() not in store.get(key)


def test_the_url_field_follows_the_host_asked_for(world, cache_on, settings):
    settings.ALLOWED_HOSTS = ["testserver", "api.example.test"]
    client = world.clients["engineer"]
    assert client.get(LIST).json()["results"][0]["url"].startswith("http://testserver/")
    other_host = client.get(LIST, HTTP_HOST="api.example.test")
    assert other_host.json()["results"][0]["url"].startswith("http://api.example.test/")


# Committed for real: the counters move when the transaction commits.


@pytest.mark.django_db(transaction=True)
def test_a_view_read_before_commit_is_not_served_after_it(api_client_for, settings):
    settings.API_RESPONSE_CACHE_SECONDS = 300
    admin = CompanyAdminFactory()
    engineer = EngineerFactory()
    job = open_job(admin=admin)
    client = api_client_for(engineer)
    assert client.get(LIST).json()["results"][0]["bid_count"] == 0

    def read_from_another_connection(seen: list) -> None:
        try:
            seen.append(client.get(LIST).json()["results"][0]["bid_count"])
        finally:
            connection.close()

    seen: list[int] = []
    with transaction.atomic():
        _bid(engineer, job)
        # Another request reads (and caches) the pre-commit rows after the in-transaction bump.
        reader = threading.Thread(target=read_from_another_connection, args=(seen,))
        reader.start()
        reader.join()
    assert seen == [0]
    assert client.get(LIST).json()["results"][0]["bid_count"] == 1


def test_a_warm_hit_asks_the_database_only_for_the_token(world, cache_on):
    """What an engineer sees beyond public jobs and a member's organizations are remembered under version counters."""
    for viewer in ("engineer", "admin"):
        client = world.clients[viewer]
        client.get(LIST)
        with CaptureQueriesContext(connection) as captured:
            assert client.get(LIST).status_code == 200
        tables = [q["sql"].split(" FROM ", 1)[1].split()[0] for q in captured.captured_queries]
        assert tables == ['"accounts_apitoken"'], captured.captured_queries


def _counts(captured) -> int:
    return sum(q["sql"].startswith("SELECT COUNT(") for q in captured.captured_queries)


def test_page_numbers_count_once_per_scope_and_version(world, cache_on):
    for _ in range(3):
        open_job(admin=world.admin)
    client = world.clients["engineer"]
    with CaptureQueriesContext(connection) as first:
        page_one = client.get(f"{LIST}?page_size=2").json()
    with CaptureQueriesContext(connection) as second:
        page_two = client.get(f"{LIST}?page_size=2&page=2").json()
    assert (_counts(first), _counts(second)) == (1, 0)  # page 2 is a response-cache miss, but not a count miss
    assert page_one["count"] == page_two["count"] == 4

    open_job(admin=world.other_admin)  # a publish moves the version: the next page counts anew, and right
    with CaptureQueriesContext(connection) as after:
        assert client.get(f"{LIST}?page_size=2&page=2").json()["count"] == 5
    assert _counts(after) == 1
    # Filters are part of what is counted.
    assert client.get(f"{LIST}?page_size=2&search=nothing-matches").json()["count"] == 0


def test_page_numbers_count_every_time_with_the_cache_off(world, settings):
    settings.API_RESPONSE_CACHE_SECONDS = 0
    client = world.clients["engineer"]
    for _ in range(2):
        with CaptureQueriesContext(connection) as captured:
            assert client.get(f"{LIST}?page_size=2").json()["count"] == 1
        assert _counts(captured) == 1


def test_a_membership_change_reaches_the_members_next_request(world, cache_on):
    """Organizations a user belongs to are remembered too: removal and an admin-made membership take effect at once."""
    from accounts.models import Membership
    from accounts.services import membership_remove

    JobFactory(organization=world.organization, created_by=world.admin)
    draft = Job.objects.get(status=Job.Status.DRAFT)
    member = world.clients["member"]
    assert draft.pk in _ids(member.get(LIST))
    assert draft.pk in _ids(member.get(f"{LIST}?page_size=5"))  # remembered, still right
    membership_remove(actor=world.admin, membership=world.member.memberships.get())
    assert draft.pk not in _ids(member.get(LIST))
    assert member.get(f"{LIST}{draft.pk}/").status_code == 404
    Membership.objects.create(organization=world.organization, user=world.member, role=Membership.Role.MEMBER)
    assert draft.pk in _ids(member.get(LIST))  # as the admin site adds one: no service, still seen
