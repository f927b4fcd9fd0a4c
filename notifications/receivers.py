"""notifications reacts to accounts' signals (accounts may not import notifications). Each receiver runs inside
the transaction that sent the signal and only touches the database; the email leaves after commit."""

from django.dispatch import receiver

from accounts.signals import organization_invite_created

from .emails import organization_invite_email_notify


@receiver(organization_invite_created)
def on_organization_invite_created(sender, invite_id: int, token: str, **kwargs) -> None:
    organization_invite_email_notify(invite_id=invite_id, token=token)
