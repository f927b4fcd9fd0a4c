"""Allowed state transitions of the payments app's objects; every service checks its move against these maps."""

from .models import ConnectedAccount, Escrow

S = Escrow.Status

ESCROW_TRANSITIONS = {
    S.PENDING_FUNDING: {S.FUNDED, S.CANCELLED},
    S.FUNDED: {S.PARTIALLY_RELEASED, S.RELEASED, S.REFUNDED, S.CLOSED},
    S.PARTIALLY_RELEASED: {S.PARTIALLY_RELEASED, S.RELEASED, S.CLOSED},
    S.RELEASED: {S.CLOSED},
    # Money that arrives after the funding deadline cancelled the escrow goes straight back.
    S.CANCELLED: {S.REFUNDED},
}

A = ConnectedAccount.Status

# Deauthorization disconnects; onboarding again (a new provider account) connects.
CONNECTED_ACCOUNT_TRANSITIONS = {
    A.CONNECTED: {A.DISCONNECTED},
    A.DISCONNECTED: {A.CONNECTED},
}
