"""What else holds a volume's data: the dependents that the apps above compute register.

Compute knows nothing of the apps built on it (docs/decisions.md, "Layers that read top-down"), yet
deleting a volume must never silently take with it what they keep of it: a snapshot still restores the
volume's data. So an app that keeps something of a volume registers, in its `AppConfig.ready()`, how to
say what it holds of one (`holding`) and how to delete that with the volume (`delete`).
`compute.services.delete_volume` asks every registered dependent: while one holds something, the user
chooses to keep it or to delete it with the volume. The volume page's delete form says what each holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from clouddigit.compute.models import Volume


@dataclass(frozen=True)
class Holding:
    """What one app holds of a volume, in the words the delete form and its refusals use."""

    counted: str  # "2 snapshots"
    names: list[str]  # the holders' names, newest first; the form shows the first five
    if_kept: str  # what keeping them means: "they still restore to new volumes"
    kept_either_way: str  # a sentence on what deleting them with the volume still keeps, or ""
    busy: str  # why the volume cannot be deleted yet (a holder is changing), or ""


@dataclass(frozen=True)
class Dependent:
    holding: Callable[[Volume], Holding | None]  # None when it holds nothing of the volume
    delete: Callable[[Any, Volume], None]  # (actor, volume): delete, as the actor, what goes with it


DEPENDENTS: list[Dependent] = []


def register(*, holding: Callable[[Volume], Holding | None], delete: Callable[[Any, Volume], None]) -> None:
    DEPENDENTS.append(Dependent(holding, delete))


def holdings(volume: Volume) -> list[Holding]:
    """What the registered apps hold of `volume`; empty when nothing holds it."""
    found = [dependent.holding(volume) for dependent in DEPENDENTS]
    return [holding for holding in found if holding is not None]


def delete_with(actor, volume: Volume) -> None:
    """Delete, as `actor`, what every registered app deletes along with `volume`."""
    for dependent in DEPENDENTS:
        dependent.delete(actor, volume)
