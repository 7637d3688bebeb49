"""One way to change a resource's state: a conditional UPDATE that only succeeds from an allowed state.

Two workers racing for the same row cannot both win: the database decides, not the Python object.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import models
from django.utils import timezone

from clouddigit.errors import Conflict


class TransitionRefused(Conflict):
    """A 409 for the user: the row is not in a state the operation can start from."""

    def __init__(self, obj, current: str | None, target: str):
        self.obj, self.current, self.target = obj, current, target
        if current is None:  # the row was deleted meanwhile
            message = f"{obj._meta.verbose_name} {obj} no longer exists; it was deleted meanwhile."
        else:
            message = f"{obj._meta.verbose_name} {obj} is {current}; it cannot become {target} from there."
        super().__init__(message)


class StateMachineMixin:
    """Models with a `state` field and a `TRANSITIONS` map {from_state: {to_state, ...}}."""

    TRANSITIONS: dict = {}
    # Given by the model the mixin is on.
    _default_manager: ClassVar[models.Manager]
    pk: Any
    state: str

    def transition(self, target: str, **fields) -> None:
        """Move to `target` if the row's current state allows it; also writes `fields`.

        Raises TransitionRefused (with the state found in the database) otherwise.
        """
        sources = [source for source, targets in self.TRANSITIONS.items() if target in targets]
        updated = (
            type(self)
            ._default_manager.filter(pk=self.pk, state__in=sources)
            .update(state=target, updated_at=timezone.now(), **fields)
        )
        if updated != 1:
            current = type(self)._default_manager.filter(pk=self.pk).values_list("state", flat=True).first()
            raise TransitionRefused(self, current, target)
        self.state = target
        for name, value in fields.items():
            setattr(self, name, value)
