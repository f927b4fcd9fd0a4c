"""The organization-invite email: the invitee gets the token (their secret) once, with the organization, role, expiry
and how to accept; nothing leaves for an invite rolled back, revoked, superseded, accepted or expired before the
email would; the token is stored only sealed until then, and never logged."""

import logging
from datetime import timedelta

import pytest
from django.core import mail
from django.db import transaction
from django.utils import timezone

from accounts.models import Membership, OrganizationInvite
from accounts.services import invite_accept, invite_create, invite_revoke
from notifications import emails
from notifications.models import EmailNotification, NotificationPreference
from notifications.tasks import email_send
from tests.factories import CompanyAdminFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def queued(settings, monkeypatch):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    sent: list[int] = []
    monkeypatch.setattr("notifications.tasks.email_send.delay", sent.append)
    return sent


@pytest.fixture
def owner():
    return CompanyAdminFactory(role=Membership.Role.OWNER, name="Olive Owner")


def _organization(owner):
    return owner.memberships.get().organization


def _invite(owner, django_capture_on_commit_callbacks, email="new.hire@example.test", role=Membership.Role.ADMIN):
    with django_capture_on_commit_callbacks(execute=True):
        return invite_create(actor=owner, organization=_organization(owner), email=email, role=role)


def test_the_invitee_gets_one_email_with_the_token_and_how_to_accept(
    owner, queued, django_capture_on_commit_callbacks, settings
):
    settings.PUBLIC_BASE_URL = "https://speedproof.example"
    issued = _invite(owner, django_capture_on_commit_callbacks)
    notification = EmailNotification.objects.get()
    assert queued == [notification.pk]
    assert notification.user is None and notification.address == "new.hire@example.test"
    # Stored only sealed: neither the row's context nor its sealed form shows the token.
    assert issued.token not in str(notification.context) and issued.token not in notification.sealed_secret
    assert emails.secret_unseal(notification.sealed_secret) == issued.token

    assert email_send(notification.pk) is True
    assert email_send(notification.pk) is False  # the task run twice sends once
    [message] = mail.outbox
    organization = _organization(owner)
    assert message.to == ["new.hire@example.test"]
    assert organization.name in message.subject
    html = message.alternatives[0][0]
    for body in (message.body, html):
        assert issued.token in body
        assert organization.name in body and "Admin" in body and "Olive Owner" in body
        assert issued.invite.expires_at.strftime("%Y-%m-%d %H:%M UTC") in body
        assert "https://speedproof.example/api/v1/auth/signup/company/" in body and "invite_token" in body
        assert "notification-preferences" not in body  # an address without an account has none to choose
    notification.refresh_from_db()
    assert notification.status == EmailNotification.Status.SENT and notification.sealed_secret == ""


def test_the_token_from_the_email_lets_the_invitee_join(owner, django_capture_on_commit_callbacks):
    issued = _invite(owner, django_capture_on_commit_callbacks, role=Membership.Role.MEMBER)
    email_send(EmailNotification.objects.get().pk)
    token = next(word for word in mail.outbox[0].body.split() if word.startswith("spi_"))
    assert token == issued.token
    invitee = UserFactory(email="new.hire@example.test")
    assert invite_accept(user=invitee, token=token).role == Membership.Role.MEMBER


def test_an_invite_rolled_back_writes_and_sends_nothing(owner, queued, django_capture_on_commit_callbacks):
    with pytest.raises(RuntimeError), django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        invite_create(actor=owner, organization=_organization(owner), email="x@example.test", role="member")
        raise RuntimeError("the caller's transaction fails")
    assert not OrganizationInvite.objects.exists() and not EmailNotification.objects.exists() and queued == []


def test_a_revoked_invite_sends_nothing_more(owner, django_capture_on_commit_callbacks):
    issued = _invite(owner, django_capture_on_commit_callbacks)
    invite_revoke(actor=owner, invite=issued.invite)
    notification = EmailNotification.objects.get()
    assert email_send(notification.pk) is False and email_send(notification.pk) is False
    assert mail.outbox == []
    notification.refresh_from_db()
    assert notification.status == EmailNotification.Status.SKIPPED and notification.sealed_secret == ""


def test_an_expired_invite_sends_nothing(owner, django_capture_on_commit_callbacks):
    issued = _invite(owner, django_capture_on_commit_callbacks)
    OrganizationInvite.objects.filter(pk=issued.invite.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert email_send(EmailNotification.objects.get().pk) is False
    assert mail.outbox == []


def test_an_accepted_invite_sends_nothing(owner, django_capture_on_commit_callbacks):
    issued = _invite(owner, django_capture_on_commit_callbacks)
    invite_accept(user=UserFactory(email="new.hire@example.test"), token=issued.token)
    assert email_send(EmailNotification.objects.get().pk) is False and mail.outbox == []


def test_reinviting_sends_only_the_newest_token(owner, django_capture_on_commit_callbacks):
    first = _invite(owner, django_capture_on_commit_callbacks)
    second = _invite(owner, django_capture_on_commit_callbacks)
    for notification in EmailNotification.objects.order_by("id"):
        email_send(notification.pk)
    [message] = mail.outbox
    assert second.token in message.body and first.token not in message.body


def test_an_existing_account_is_told_to_accept_and_its_preferences_apply(owner, django_capture_on_commit_callbacks):
    invitee = UserFactory(email="known@example.test", name="Kim Known")
    issued = _invite(owner, django_capture_on_commit_callbacks, email="Known@Example.test")
    notification = EmailNotification.objects.get()
    assert notification.user == invitee
    email_send(notification.pk)
    [message] = mail.outbox
    assert message.to == ["known@example.test"] and "Kim Known" in message.body
    assert "/api/v1/invites/accept/" in message.body and issued.token in message.body
    assert "/api/v1/me/notification-preferences/" in message.body

    NotificationPreference.objects.create(user=invitee, organization_invite=False)
    _invite(owner, django_capture_on_commit_callbacks, email="known@example.test")
    assert email_send(EmailNotification.objects.order_by("-id").first().pk) is False
    assert len(mail.outbox) == 1


def test_a_token_sealed_under_another_secret_key_is_not_sent(owner, django_capture_on_commit_callbacks, settings):
    _invite(owner, django_capture_on_commit_callbacks)
    settings.SECRET_KEY = "rotated-" + settings.SECRET_KEY
    notification = EmailNotification.objects.get()
    assert email_send(notification.pk) is False and mail.outbox == []
    notification.refresh_from_db()
    assert notification.status == EmailNotification.Status.SKIPPED and notification.sealed_secret == ""


def test_the_token_never_reaches_the_logs(owner, django_capture_on_commit_callbacks, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    issued = _invite(owner, django_capture_on_commit_callbacks)
    email_send(EmailNotification.objects.get().pk)
    assert mail.outbox and issued.token in mail.outbox[0].body
    captured = capsys.readouterr()
    assert issued.token not in caplog.text + captured.out + captured.err
