"""Email for the moments that need a person.

`email_notify` runs inside the transaction of the change (called by the app that owns it, with a context of
plain, safe values: titles, ids, amounts, decisions, links; never hidden inputs or secrets), writes one
`EmailNotification` per recipient and queues the send after commit. `email_send` claims the row, honours the
recipient's preferences, renders the text and HTML templates and sends once: a second run finds it sent.
Emails do not depend on webhook endpoints.

An organization invite goes to an address that may have no account (no preferences then) and carries the
invitee's own secret, the invite token: it waits sealed (encrypted) in the row, is opened only to render the
email, and is erased once the email is sent or skipped. An invite revoked, accepted or expired by the time the
email would leave is not sent.
"""

import base64
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta

import structlog
from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone

from accounts.models import Membership, OrganizationInvite, User

from .models import EmailCategory, EmailNotification, NotificationPreference
from .services import Recipient

log = structlog.get_logger(__name__)


def _invite_still_open(context: dict) -> bool:
    invite = OrganizationInvite.objects.filter(pk=context.get("invite_id")).first()
    return invite is not None and invite.status_at() == OrganizationInvite.Status.PENDING


@dataclass(frozen=True)
class EmailKind:
    template: str
    category: str
    subject: str  # formatted with the context
    # Asked when the email is about to leave: False skips it (what it announced is no longer so).
    still_relevant: Callable[[dict], bool] | None = None


BID_RECEIVED = EmailKind("bid_received", EmailCategory.BID_RECEIVED, "New bid on {job_title}")
BID_ACCEPTED = EmailKind("bid_accepted", EmailCategory.BID_ACCEPTED, "Your bid on {job_title} was accepted")
FUNDING_REQUIRED = EmailKind("funding_required", EmailCategory.FUNDING_REQUIRED, "Fund the contract for {job_title}")
VERIFICATION_COMPLETED = EmailKind(
    "verification_completed", EmailCategory.VERIFICATION_COMPLETED, "Verification {decision} for {job_title}"
)
PAYMENT_RELEASED = EmailKind("payment_released", EmailCategory.PAYMENT_RELEASED, "Payment released for {job_title}")
REFUND_ISSUED = EmailKind("refund_issued", EmailCategory.REFUND_ISSUED, "Refund issued for {job_title}")
DISPUTE_OPENED = EmailKind("dispute_opened", EmailCategory.DISPUTES, "Dispute opened on {job_title}")
DISPUTE_ANSWERED = EmailKind("dispute_answered", EmailCategory.DISPUTES, "Dispute answered on {job_title}")
DISPUTE_REVERIFIED = EmailKind(
    "dispute_reverified", EmailCategory.DISPUTES, "Dispute on {job_title}: the re-verification finished"
)
DISPUTE_RESOLVED = EmailKind("dispute_resolved", EmailCategory.DISPUTES, "Dispute resolved on {job_title}")
REVIEW_WINDOW_CLOSING = EmailKind(
    "review_window_closing", EmailCategory.REVIEW_WINDOW_CLOSING, "Review window for {job_title} closes within 24 hours"
)
ORGANIZATION_INVITE = EmailKind(
    "organization_invite",
    EmailCategory.ORGANIZATION_INVITE,
    "You are invited to join {organization_name}",
    still_relevant=_invite_still_open,
)

WEBHOOK_ENDPOINT_DISABLED = EmailKind(
    "webhook_endpoint_disabled", EmailCategory.WEBHOOKS, "Webhook endpoint {endpoint_id} was disabled"
)

EMAIL_KINDS = (
    BID_RECEIVED,
    BID_ACCEPTED,
    FUNDING_REQUIRED,
    VERIFICATION_COMPLETED,
    PAYMENT_RELEASED,
    REFUND_ISSUED,
    DISPUTE_OPENED,
    DISPUTE_ANSWERED,
    DISPUTE_REVERIFIED,
    DISPUTE_RESOLVED,
    REVIEW_WINDOW_CLOSING,
    ORGANIZATION_INVITE,
    WEBHOOK_ENDPOINT_DISABLED,
)
KINDS_BY_TEMPLATE = {kind.template: kind for kind in EMAIL_KINDS}


def email_recipient_user_ids(recipient: Recipient) -> list[int]:
    """The people behind a recipient: the engineer, or the organization's active owners and admins."""
    if recipient.user_id is not None:
        return list(User.objects.filter(pk=recipient.user_id, is_active=True).values_list("pk", flat=True))
    return list(
        Membership.objects.filter(
            organization_id=recipient.organization_id, role__in=Membership.ADMIN_ROLES, user__is_active=True
        )
        .order_by("id")
        .values_list("user_id", flat=True)
    )


def email_notify(
    *, kind: EmailKind, key: str, recipients: Iterable[Recipient], context: dict
) -> list[EmailNotification]:
    """Record the email for each person behind `recipients`, in the caller's transaction; sent after commit.
    The same key, person and category is recorded (and sent) once."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("email_notify runs inside the transaction of the change it reports")
    written = []
    user_ids = dict.fromkeys(uid for recipient in recipients for uid in email_recipient_user_ids(recipient))
    for user_id in user_ids:
        notification, created = EmailNotification.objects.get_or_create(
            key=key,
            user_id=user_id,
            category=kind.category,
            defaults={"template": kind.template, "context": context},
        )
        if created:
            _enqueue_on_commit(notification.pk)
            written.append(notification)
    return written


def organization_invite_email_notify(*, invite_id: int, token: str) -> EmailNotification | None:
    """Record the invite's email to the invited address, in the invite's transaction; sent after commit, once.
    The token is stored only sealed, and only until the email leaves."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("organization_invite_email_notify runs inside the transaction of the invite")
    invite = OrganizationInvite.objects.select_related("organization", "invited_by").get(pk=invite_id)
    account = User.objects.filter(email__iexact=invite.email, is_active=True).first()
    context = {
        "invite_id": invite.pk,
        "organization_name": invite.organization.name,
        "role": invite.get_role_display(),
        "invited_by": (invite.invited_by.name or invite.invited_by.email) if invite.invited_by else "",
        "invited_email": invite.email,
        "expires_at": invite.expires_at.strftime("%Y-%m-%d %H:%M UTC"),
        "has_account": account is not None,
    }
    notification, created = EmailNotification.objects.get_or_create(
        key=f"organization_invite:{invite.pk}",
        category=ORGANIZATION_INVITE.category,
        **({"user": account} if account else {"user": None, "address": invite.email}),
        defaults={
            "template": ORGANIZATION_INVITE.template,
            "context": context,
            "address": invite.email,
            "sealed_secret": secret_seal(token),
        },
    )
    if not created:
        return None
    _enqueue_on_commit(notification.pk)
    return notification


def _sealing_key() -> Fernet:
    derived = hashlib.sha256(b"speedproof.notifications.email-secret:" + settings.SECRET_KEY.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(derived))


def secret_seal(secret: str) -> str:
    return _sealing_key().encrypt(secret.encode()).decode()


def secret_unseal(sealed: str) -> str | None:
    """None when it cannot be opened (DJANGO_SECRET_KEY changed since): the email is then not sent."""
    try:
        return _sealing_key().decrypt(sealed.encode()).decode()
    except InvalidToken:
        return None


def _enqueue_on_commit(notification_id: int) -> None:
    def send() -> None:
        from .tasks import email_send

        try:
            email_send.delay(notification_id)
        except Exception:  # the broker is down; the row stays pending
            log.warning("email_enqueue_failed", notification_id=notification_id)

    transaction.on_commit(send)


def email_render(
    *, template: str, context: dict, user: User | None, address: str = "", secret: str = ""
) -> tuple[str, str, str]:
    """(subject, text, html) of one email; `secret` is the recipient's own secret, for the kinds that carry one."""
    kind = KINDS_BY_TEMPLATE[template]
    full = {
        **context,
        "secret": secret,
        "recipient_name": (user.name or user.email) if user is not None else address,
        "base_url": settings.PUBLIC_BASE_URL.rstrip("/"),
        # Only an account has preferences to choose.
        "preferences_url": settings.PUBLIC_BASE_URL.rstrip("/") + "/api/v1/me/notification-preferences/"
        if user is not None
        else "",
    }
    subject = "Speedproof: " + kind.subject.format(**full)
    text = render_to_string(f"notifications/email/{template}.txt", full)
    html = render_to_string(f"notifications/email/{template}.html", full)
    return " ".join(subject.split())[:200], text, html


def email_send(*, notification_id: int) -> bool:
    """Send the email once; safe to run twice (a second run finds it sent, sending or skipped)."""
    with transaction.atomic():
        notification = (
            EmailNotification.objects.select_for_update(of=("self",))
            .select_related("user")
            .filter(pk=notification_id)
            .first()
        )
        if notification is None or notification.status != EmailNotification.Status.PENDING:
            return False
        user = notification.user
        address = notification.address or (user.email if user is not None else "")
        preference = NotificationPreference.objects.filter(user_id=notification.user_id).first() if user else None
        kind = KINDS_BY_TEMPLATE[notification.template]
        secret = secret_unseal(notification.sealed_secret) if notification.sealed_secret else ""
        if (
            not address
            or (preference is not None and not preference.wants(notification.category))
            or (kind.still_relevant is not None and not kind.still_relevant(notification.context))
            or secret is None
        ):
            notification.status = EmailNotification.Status.SKIPPED
            notification.sealed_secret = ""
            notification.save(update_fields=["status", "sealed_secret", "updated_at"])
            return False
        notification.status = EmailNotification.Status.SENDING
        notification.save(update_fields=["status", "updated_at"])
    try:
        subject, text, html = email_render(
            template=notification.template, context=notification.context, user=user, address=address, secret=secret
        )
        message = EmailMultiAlternatives(subject=subject, body=text, to=[address])
        message.attach_alternative(html, "text/html")
        message.send()
    except Exception:
        EmailNotification.objects.filter(pk=notification_id).update(
            status=EmailNotification.Status.PENDING, updated_at=timezone.now()
        )
        raise
    EmailNotification.objects.filter(pk=notification_id).update(
        status=EmailNotification.Status.SENT, sent_at=timezone.now(), updated_at=timezone.now(), sealed_secret=""
    )
    log.info("email_sent", notification_id=notification_id, template=notification.template)
    return True


def emails_enqueue_stale(*, limit: int = 500) -> int:
    """The backstop for emails whose send message never ran (broker down at commit, a worker that died):
    queue again every email pending for longer than EMAIL_SWEEP_GRACE_SECONDS, and every email left `sending`
    by a process that died mid-send for longer than EMAIL_SENDING_STALE_SECONDS (back to pending: such an
    email may reach its recipient twice, never zero times). Emails older than EMAIL_SWEEP_MAX_AGE_HOURS are
    left as they are: an email days late does more harm than good."""
    now = timezone.now()
    recent = EmailNotification.objects.filter(created_at__gte=now - timedelta(hours=settings.EMAIL_SWEEP_MAX_AGE_HOURS))
    recent.filter(
        status=EmailNotification.Status.SENDING,
        updated_at__lte=now - timedelta(seconds=settings.EMAIL_SENDING_STALE_SECONDS),
    ).update(status=EmailNotification.Status.PENDING, updated_at=now)
    stale = recent.filter(
        status=EmailNotification.Status.PENDING,
        updated_at__lte=now - timedelta(seconds=settings.EMAIL_SWEEP_GRACE_SECONDS),
    )
    ids = list(stale.order_by("updated_at").values_list("pk", flat=True)[:limit])
    from .tasks import email_send

    for notification_id in ids:
        email_send.delay(notification_id)
    if ids:
        log.info("emails_requeued", count=len(ids))
    return len(ids)


def notification_preferences_get(*, user: User) -> NotificationPreference:
    """The user's preferences; defaults (all on) when never changed."""
    return NotificationPreference.objects.filter(user=user).first() or NotificationPreference(user=user)


@transaction.atomic
def notification_preferences_update(*, user: User, changes: dict[str, bool]) -> NotificationPreference:
    preference, _ = NotificationPreference.objects.select_for_update().get_or_create(user=user)
    fields = [name for name in changes if name in EmailCategory.values]
    for name in fields:
        setattr(preference, name, bool(changes[name]))
    if fields:
        preference.save(update_fields=[*fields, "updated_at"])
    return preference
