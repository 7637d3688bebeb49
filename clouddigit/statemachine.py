"""One way to change a resource's state: a conditional UPDATE that only succeeds from an allowed state.

Two workers racing for the same row cannot both win: the database decides, not the Python object.
"""

from __future__ import annotations

from django.utils import timezone

from clouddigit.errors import Conflict


class TransitionRefused(Conflict):
    """A 409 for the user: the row is not in a state the operation can start from."""

    def __init__(self, obj, current: str, target: str):
        self.obj, self.current, self.target = obj, current, target
        super().__init__(
            f"{obj._meta.verbose_name} {obj} is {current}; it cannot become {target} from there."
        )


class StateMachineMixin:
    """Models with a `state` field and a `TRANSITIONS` map {from_state: {to_state, ...}}."""

    TRANSITIONS: dict = {}

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
