"""What the apps above compute have to say about its VMs and volumes: the one place they register it.

Compute knows nothing of the apps built on it (docs/decisions.md, "Layers that read top-down"), yet some
of its decisions need their word. An app registers, in its `AppConfig.ready()`:

- `register_volume_dependent`: what it holds of a volume (`holding`) and how to delete that with it
  (`delete`). Deleting a volume must never silently take with it what they keep of it: a snapshot still
  restores the volume's data. `compute.services.delete_volume` asks every dependent: while one holds
  something, the user chooses to keep it or to delete it with the volume; the delete form says what.
- `register_vm_delete_check`: why a VM cannot be deleted now (a snapshot of it is being taken), or "".
- `register_tag_scope`: which of a VM's tags would put it under something (a snapshot policy), and why;
  a restored VM starts without those unless the user keeps them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from clouddigit.compute.models import VM, Project, Volume


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
VM_DELETE_CHECKS: list[Callable[[VM], str]] = []
TAG_SCOPES: list[Callable[[Project, dict], dict[str, str]]] = []


def register_volume_dependent(
    *, holding: Callable[[Volume], Holding | None], delete: Callable[[Any, Volume], None]
) -> None:
    DEPENDENTS.append(Dependent(holding, delete))


def register_vm_delete_check(check: Callable[[VM], str]) -> None:
    VM_DELETE_CHECKS.append(check)


def register_tag_scope(scope: Callable[[Project, dict], dict[str, str]]) -> None:
    TAG_SCOPES.append(scope)


def holdings(volume: Volume) -> list[Holding]:
    """What the registered apps hold of `volume`; empty when nothing holds it."""
    found = [dependent.holding(volume) for dependent in DEPENDENTS]
    return [holding for holding in found if holding is not None]


def delete_with(actor, volume: Volume) -> None:
    """Delete, as `actor`, what every registered app deletes along with `volume`."""
    for dependent in DEPENDENTS:
        dependent.delete(actor, volume)


def vm_delete_blockers(vm: VM) -> list[str]:
    """Why the registered apps say `vm` cannot be deleted now; empty when none objects."""
    return [reason for check in VM_DELETE_CHECKS if (reason := check(vm))]


def scoped_tags(project: Project, tags: dict) -> dict[str, str]:
    """{key: why} for each of `tags` that would put a VM of `project` under something an app runs."""
    found: dict[str, str] = {}
    for scope in TAG_SCOPES:
        found.update(scope(project, tags))
    return found
