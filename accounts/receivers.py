"""Membership rows changed by any path (services, the admin): the user's remembered organizations move on."""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from .models import Membership
from .selectors import user_memberships_changed


@receiver(post_save, sender=Membership)
@receiver(post_delete, sender=Membership)
def on_membership_changed(sender, instance: Membership, **kwargs) -> None:
    user_memberships_changed(user_id=instance.user_id)
