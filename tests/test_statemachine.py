from __future__ import annotations

import pytest

from clouddigit.compute import services as compute
from clouddigit.compute.models import VM, Volume
from clouddigit.statemachine import TransitionRefused
from tests.worker import created


def test_a_refused_transition_names_the_state_found_in_the_database(make_vm, prod):
    vm = make_vm(prod, "web-01")
    VM.objects.filter(pk=vm.pk).update(state=VM.State.RUNNING)

    with pytest.raises(TransitionRefused, match="^Conflict: VM web-01 is running; it cannot become running"):
        vm.transition(VM.State.RUNNING)


def test_a_transition_of_a_deleted_row_says_it_was_deleted(prod, dha):
    volume = created(
        compute.create_volume(actor=None, project=prod, region=dha, name="scratch", size_bytes=2**20)
    )
    Volume.objects.filter(pk=volume.pk).delete()

    with pytest.raises(TransitionRefused, match="^Conflict: volume scratch no longer exists; it was deleted"):
        volume.transition(Volume.State.ATTACHED)
