from collections.abc import Iterable, Mapping
from typing import Any

from django.db import models, transaction

from .errors import IllegalTransition
from .services import audit_record


def transition_apply(
    obj: models.Model,
    *,
    to: str,
    allowed: Mapping[str, Iterable[str]],
    actor: Any,
    verb: str,
    data: dict | None = None,
    update_fields: Iterable[str] = (),
) -> models.Model:
    """Move a row that the caller has locked to state `to`, if the transition map allows it, and audit it."""
    assert transaction.get_connection().in_atomic_block, "transitions run inside the caller's transaction"
    current = obj.status
    if to not in allowed.get(current, ()):
        raise IllegalTransition(
            f"Cannot {verb.replace('_', ' ')}: the {obj._meta.verbose_name} is {current}.",
            code="illegal_transition",
            fields={"status": [current]},
        )
    obj.status = to
    obj.save(update_fields=["status", "updated_at", *update_fields])
    audit_record(actor=actor, verb=verb, obj=obj, from_state=current, to_state=to, data=data)
    return obj
