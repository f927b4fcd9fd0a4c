"""Accounts' domain signals, sent inside the transaction of the change: receivers only touch the database and
schedule anything else after commit. Apps above accounts (which accounts never imports) connect here.

`organization_invite_created` carries `invite_id` and `token`, the invite's raw token: the invitee's secret,
which a receiver may hand only to the invited address (never log it, store it in the clear or show it to anyone).
"""

from django.dispatch import Signal

organization_invite_created = Signal()
