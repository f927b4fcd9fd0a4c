"""Engineers' payout accounts (connected accounts): onboarding and its links, what the provider tells us about the
account (updates, deauthorization, failed bank payouts), and paying the transfers that waited for it."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import timedelta

from django.conf import settings
from django.core import signing
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from common.errors import NotFound, NotPermitted, RetryableError, ValidationFailed
from common.services import audit_record
from common.transitions import transition_apply

from .. import signals
from ..countries import country_validate, service_agreement_for
from ..errors import AccountAccessRevoked
from ..models import ConnectedAccount, ProviderOperation
from ..providers.base import ConnectedAccountInfo, Payout
from ..providers.factory import payment_provider
from ..states import CONNECTED_ACCOUNT_TRANSITIONS
from .operations import payment_operation_execute
from .support import PAYEE_DISCONNECTED_REASON, _enqueue

logger = logging.getLogger(__name__)

AS = ConnectedAccount.Status
# How long the refresh and return URLs we hand Stripe stay usable. Stripe's own Account Link expires within minutes;
# ours must outlive an engineer who comes back days later to a link Stripe then reports as expired.
ONBOARDING_URL_MAX_AGE = timedelta(days=7)
_ONBOARDING_SALT = "payments.payout-account-onboarding"


@dataclass(frozen=True)
class OnboardingStatus:
    account_id: str | None
    # A fresh hosted-onboarding link whenever the account owes information: "onboarding" the first time, "update"
    # when requirements appeared after onboarding. Single-use and short-lived: ask again rather than store it.
    onboarding_url: str | None
    link_purpose: str | None
    # A single-use link into the engineer's Express Dashboard (bank account, payouts), once onboarded.
    dashboard_url: str | None
    status: str | None  # connected | disconnected
    status_reason: str
    country: str
    service_agreement: str
    transfers_active: bool
    details_submitted: bool
    requirements_due: tuple[str, ...]
    payout_failure: dict | None  # the latest failed payout to the engineer's bank: payout, code, message


def _status(account: ConnectedAccount | None, *, links: bool = False) -> OnboardingStatus:
    if account is None:
        return OnboardingStatus(None, None, None, None, None, "", "", "", False, False, (), None)
    onboarding_url = purpose = dashboard_url = None
    if links and account.status == AS.CONNECTED:
        provider = payment_provider()
        if not account.transfers_active or account.requirements_due:
            refresh_url, return_url = _onboarding_urls(account)
            onboarding_url = provider.account_link_create(
                account_id=account.provider_account_id, refresh_url=refresh_url, return_url=return_url
            ).url
            purpose = "update" if account.details_submitted else "onboarding"
        if account.details_submitted:
            dashboard_url = provider.account_login_link_create(account_id=account.provider_account_id).url
    return OnboardingStatus(
        account_id=account.provider_account_id,
        onboarding_url=onboarding_url,
        link_purpose=purpose,
        dashboard_url=dashboard_url,
        status=account.status,
        status_reason=account.status_reason,
        country=account.country,
        service_agreement=account.service_agreement,
        transfers_active=account.transfers_active,
        details_submitted=account.details_submitted,
        requirements_due=tuple(account.requirements_due),
        payout_failure=dict(account.last_payout_failure) or None,
    )


# ---- signed refresh / return URLs ----------------------------------------------------------------


def _onboarding_token(account: ConnectedAccount, purpose: str) -> str:
    """Names one payout account (row and provider id, so a replaced account's old links stop working) for one
    purpose; signed with SECRET_KEY and time-stamped, so it needs no login and expires."""
    return signing.TimestampSigner(salt=f"{_ONBOARDING_SALT}:{purpose}").sign_object(
        {"account": account.pk, "provider_account": account.provider_account_id}
    )


def _onboarding_urls(account: ConnectedAccount) -> tuple[str, str]:
    base = settings.PUBLIC_BASE_URL.rstrip("/")
    refresh = reverse("payments-onboarding-refresh", kwargs={"token": _onboarding_token(account, "refresh")})
    done = reverse("payments-onboarding-return", kwargs={"token": _onboarding_token(account, "return")})
    return f"{base}{refresh}", f"{base}{done}"


def payout_account_for_token(*, token: str, purpose: str) -> ConnectedAccount:
    """The payout account a signed refresh/return token names; NotFound or NotPermitted (expired) otherwise."""
    signer = signing.TimestampSigner(salt=f"{_ONBOARDING_SALT}:{purpose}")
    try:
        value = signer.unsign_object(token, max_age=ONBOARDING_URL_MAX_AGE)
    except signing.SignatureExpired:
        raise NotPermitted(
            "This onboarding link has expired. Ask for a new one (POST /api/v1/payments/onboarding/).",
            code="onboarding_link_expired",
        ) from None
    except (signing.BadSignature, ValueError):
        raise NotFound("No such onboarding link.", code="onboarding_link_invalid") from None
    account = ConnectedAccount.objects.filter(
        pk=value.get("account"), provider_account_id=value.get("provider_account")
    ).first()
    if account is None:
        raise NotFound("No such onboarding link.", code="onboarding_link_invalid")
    return account


def payout_account_link_refresh(*, token: str) -> str:
    """Stripe's refresh_url: the Account Link expired or was used. Make a fresh one for the account the signed
    token names and return its URL (the page redirects there)."""
    account = payout_account_for_token(token=token, purpose="refresh")
    if account.status != AS.CONNECTED:
        raise NotPermitted(
            "This payout account is disconnected; start onboarding again from the API.",
            code="payout_account_disconnected",
        )
    refresh_url, return_url = _onboarding_urls(account)
    return (
        payment_provider()
        .account_link_create(account_id=account.provider_account_id, refresh_url=refresh_url, return_url=return_url)
        .url
    )


def payout_account_return(*, token: str) -> OnboardingStatus:
    """Stripe's return_url: the engineer left the hosted flow (done or not). Re-fetch the account and say where
    onboarding stands; arriving here decides nothing by itself."""
    account = payout_account_for_token(token=token, purpose="return")
    if account.status == AS.CONNECTED:
        account = payout_account_refetch(account=account)
    return _status(account)


# ---- onboarding ----------------------------------------------------------------------------------


def _engineer_check(user: User) -> None:
    if not user.is_authenticated or user.account_type != User.AccountType.ENGINEER:
        raise NotPermitted("Only engineers set up payout accounts.", code="not_an_engineer")


def _engineer_country(user: User, requested: str | None) -> str:
    """The engineer's profile country when the profile has one, else the country of the request (required)."""
    profile = getattr(user, "engineer_profile", None)
    from_profile = getattr(profile, "country", "") if profile is not None else ""
    if from_profile:
        return country_validate(from_profile)
    if not requested:
        raise ValidationFailed(
            "The country of the payout account is required (ISO 3166-1 alpha-2, e.g. US, DE, IN).",
            code="country_required",
            fields={"country": ["required"]},
        )
    return country_validate(requested)


def payout_account_refetch(*, account: ConnectedAccount) -> ConnectedAccount:
    """The account's current state from the provider, recorded; a deauthorized account is disconnected."""
    try:
        info = payment_provider().account_get(account_id=account.provider_account_id)
    except AccountAccessRevoked:
        return payout_account_disconnect(account_id=account.provider_account_id) or account
    return connected_account_sync(info=info) or account


def engineer_onboarding_start(*, user: User, country: str | None = None) -> OnboardingStatus:
    """Create the engineer's payout account (or a new one after a disconnection) and answer fresh links.

    Safe to call at any time: each call returns a new single-use onboarding link while something is owed, and a
    dashboard login link once onboarded. `country` is needed only when the profile has none.
    """
    _engineer_check(user)
    provider = payment_provider()
    account = ConnectedAccount.objects.filter(user=user).first()
    if account is not None and account.status == AS.CONNECTED:
        account = payout_account_refetch(account=account)
    if account is None:
        code = _engineer_country(user, country)
        agreement = service_agreement_for(code)
        info = provider.account_create(
            email=user.email,
            country=code,
            service_agreement=agreement,
            metadata={"user_id": str(user.pk)},
            idempotency_key=f"account:{user.pk}",
        )
        try:
            with transaction.atomic():
                account = ConnectedAccount.objects.create(
                    user=user,
                    provider_account_id=info.id,
                    country=code,
                    service_agreement=agreement,
                    transfers_active=info.transfers_active,
                    details_submitted=info.details_submitted,
                    payouts_enabled=info.payouts_enabled,
                    requirements_due=list(info.requirements_due),
                )
                audit_record(
                    actor=user,
                    verb="payout_account_created",
                    obj=account,
                    data={"account": info.id, "country": code, "service_agreement": agreement},
                )
        except IntegrityError:
            account = ConnectedAccount.objects.get(user=user)
    elif account.status == AS.DISCONNECTED:
        account = _payout_account_reconnect(user=user, account=account, country=country)
    return _status(account, links=True)


def _payout_account_reconnect(*, user: User, account: ConnectedAccount, country: str | None) -> ConnectedAccount:
    """A disconnected account cannot be paid again: onboarding starts over with a new provider account."""
    code = _engineer_country(user, country or account.country)
    agreement = service_agreement_for(code)
    attempt = account.connections + 1
    info = payment_provider().account_create(
        email=user.email,
        country=code,
        service_agreement=agreement,
        metadata={"user_id": str(user.pk)},
        idempotency_key=f"account:{user.pk}:{attempt}",
    )
    with transaction.atomic():
        account = ConnectedAccount.objects.select_for_update().get(pk=account.pk)
        if account.status != AS.DISCONNECTED or account.connections != attempt - 1:
            return account  # a concurrent request reconnected it
        previous = account.provider_account_id
        account.provider_account_id = info.id
        account.connections = attempt
        account.country, account.service_agreement = code, agreement
        account.transfers_active = info.transfers_active
        account.details_submitted = info.details_submitted
        account.payouts_enabled = info.payouts_enabled
        account.requirements_due = list(info.requirements_due)
        account.status_reason = ""
        transition_apply(
            account,
            to=AS.CONNECTED,
            allowed=CONNECTED_ACCOUNT_TRANSITIONS,
            actor=user,
            verb="payout_account_reconnected",
            data={"account": info.id, "previous": previous, "country": code, "service_agreement": agreement},
            update_fields=[
                "provider_account_id",
                "connections",
                "country",
                "service_agreement",
                "transfers_active",
                "details_submitted",
                "payouts_enabled",
                "requirements_due",
                "status_reason",
            ],
        )
        signals.payout_account_updated.send(sender=ConnectedAccount, user_id=account.user_id)
    return account


def engineer_onboarding_refresh(*, user: User) -> OnboardingStatus:
    """Where the engineer's payout account stands (re-fetched from the provider); no links are made."""
    account = ConnectedAccount.objects.filter(user=user).first()
    if account is not None and account.status == AS.CONNECTED:
        account = payout_account_refetch(account=account)
    return _status(account)


# ---- what the provider tells us ------------------------------------------------------------------


def connected_account_sync(*, info: ConnectedAccountInfo) -> ConnectedAccount | None:
    with transaction.atomic():
        account = ConnectedAccount.objects.select_for_update().filter(provider_account_id=info.id).first()
        if account is None:
            return None
        became_payable = info.transfers_active and not account.transfers_active
        before = _status(account)
        account.transfers_active = info.transfers_active
        account.details_submitted = info.details_submitted
        account.payouts_enabled = info.payouts_enabled
        account.requirements_due = list(info.requirements_due)
        if info.country:
            account.country = info.country
        if info.service_agreement:
            account.service_agreement = info.service_agreement
        account.save()
        if became_payable and account.status == AS.CONNECTED:
            payouts_release_awaiting(user_id=account.user_id)
        if _status(account) != before:
            signals.payout_account_updated.send(sender=ConnectedAccount, user_id=account.user_id)
    return account


def payout_account_disconnect(*, account_id: str) -> ConnectedAccount | None:
    """The account deauthorized the platform (confirmed by the provider refusing us the account): nothing more is
    transferred to it; its pending transfers wait, with the reason, until the engineer onboards again. Idempotent."""
    with transaction.atomic():
        account = ConnectedAccount.objects.select_for_update().filter(provider_account_id=account_id).first()
        if account is None or account.status == AS.DISCONNECTED:
            return account
        account.transfers_active = account.payouts_enabled = False
        account.status_reason = "The payout account disconnected from the platform (deauthorized)."
        transition_apply(
            account,
            to=AS.DISCONNECTED,
            allowed=CONNECTED_ACCOUNT_TRANSITIONS,
            actor=None,
            verb="payout_account_disconnected",
            data={"account": account_id},
            update_fields=["transfers_active", "payouts_enabled", "status_reason"],
        )
        ProviderOperation.objects.filter(
            escrow__payee_id=account.user_id,
            kind=ProviderOperation.Kind.TRANSFER,
            status__in=[ProviderOperation.Status.PENDING, ProviderOperation.Status.AWAITING_PAYEE],
        ).update(
            status=ProviderOperation.Status.AWAITING_PAYEE,
            last_error=PAYEE_DISCONNECTED_REASON,
            updated_at=timezone.now(),
        )
        signals.payout_account_updated.send(sender=ConnectedAccount, user_id=account.user_id)
    return account


def payout_record(*, payout: Payout) -> ConnectedAccount | None:
    """A payout to the engineer's bank was paid or failed (re-fetched): keep the latest of each on the account for
    the engineer to see (a paid payout clears an earlier failure), audit it and tell the engineer, once per payout."""
    if payout.status not in ("paid", "failed"):
        return None
    field = "last_payout_paid" if payout.status == "paid" else "last_payout_failure"
    with transaction.atomic():
        account = ConnectedAccount.objects.select_for_update().filter(provider_account_id=payout.account_id).first()
        if account is None or getattr(account, field).get("payout") == payout.id:
            return account
        record = {
            "payout": payout.id,
            "amount": payout.amount,
            "currency": payout.currency,
            "recorded_at": timezone.now().isoformat(),
        }
        if payout.status == "failed":
            record.update(code=payout.failure_code or "", message=payout.failure_message or "")
        elif account.last_payout_failure:
            account.last_payout_failure = {}
        setattr(account, field, record)
        account.save(update_fields=[field, "last_payout_failure", "updated_at"])
        audit_record(
            actor=None,
            verb=f"payout_{payout.status}",
            obj=account,
            data={"payout": payout.id, "code": payout.failure_code or "", "amount": payout.amount},
        )
        signals.payout_settled.send(
            sender=ConnectedAccount,
            user_id=account.user_id,
            payout={
                "id": payout.id,
                "status": payout.status,
                "amount": payout.amount,
                "currency": payout.currency,
                "failure_code": payout.failure_code or None,
            },
        )
    return account


def payout_account_status(*, user_id: int) -> dict:
    """The payout account as `GET /payments/onboarding/` shows it, from the database (no links, no provider call)."""
    return asdict(_status(ConnectedAccount.objects.filter(user_id=user_id).first()))


# ---- paying what waited --------------------------------------------------------------------------


def payouts_release_awaiting(*, user_id: int) -> int:
    """The engineer can now be paid: queue every transfer that waited for their account."""
    ids = list(
        ProviderOperation.objects.filter(
            escrow__payee_id=user_id, status=ProviderOperation.Status.AWAITING_PAYEE
        ).values_list("pk", flat=True)
    )
    ProviderOperation.objects.filter(pk__in=ids, status=ProviderOperation.Status.AWAITING_PAYEE).update(
        status=ProviderOperation.Status.PENDING, last_error="", updated_at=timezone.now()
    )
    for op_id in ids:
        _enqueue("payment_operation_execute", op_id)
    return len(ids)


def payouts_retry_payable(*, older_than: timedelta = timedelta(minutes=1)) -> int:
    """Pay what is owed: transfers waiting for a now-payable engineer, and operations left pending."""
    waiting = ProviderOperation.objects.filter(status=ProviderOperation.Status.AWAITING_PAYEE).values(
        "escrow__payee_id"
    )
    for user_id in ConnectedAccount.objects.filter(
        user_id__in=waiting, transfers_active=True, status=AS.CONNECTED
    ).values_list("user_id", flat=True):
        payouts_release_awaiting(user_id=user_id)
    # Transfers out of a frozen escrow wait; refunds and reversals (an inquiry's refund, a lost chargeback's
    # reversals) go ahead.
    stale = (
        ProviderOperation.objects.filter(
            status=ProviderOperation.Status.PENDING, updated_at__lt=timezone.now() - older_than
        )
        .exclude(Q(kind=ProviderOperation.Kind.TRANSFER) & (Q(escrow__frozen=True) | Q(escrow__operator_frozen=True)))
        .values_list("pk", flat=True)
    )
    done = 0
    for op_id in list(stale):
        try:
            payment_operation_execute(operation_id=op_id)
            done += 1
        except RetryableError as exc:
            logger.warning("operation %s still failing: %s", op_id, exc.message)
    return done
