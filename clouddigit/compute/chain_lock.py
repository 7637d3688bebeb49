"""The lock of a volume chain: which chain a volume or a sealed layer belongs to, and holding it.

Every job that runs qemu-img on a chain's files holds this lock around those runs (the file lock itself
is `clouddigit.backends.chainlock`): exclusive to create, rebase, commit, seal, grow or remove a file of
the chain, shared to only read it. Compute takes it to resize and delete volumes; `snapshots.chains`
(which re-exports `locked`) and its callers take it for every snapshot, restore and image job.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from django.conf import settings
from django.db import connection

from clouddigit.backends import chainlock
from clouddigit.compute.models import Layer, Volume


@contextmanager
def locked(
    *items: Layer | Volume, purpose: str, shared: bool = False, timeout: float | None = None
) -> Iterator[None]:
    """Hold the lock of every chain `items` belong to: exclusive to create, rebase, commit or seal a
    file of the chain, shared to only read it. Once held, each item is read again from the database (a
    job that held the chain before may have moved it); an item deleted meanwhile raises DoesNotExist.

    Never wait for it inside a transaction: the holder may need the database to finish. Locks of several
    chains are taken in one order (their keys sorted), so two jobs never wait for each other.
    """
    while True:
        keys = _chain_keys(items)
        with ExitStack() as stack:
            for volume_dir, key in keys:
                stack.enter_context(
                    chainlock.held(
                        volume_dir,
                        key,
                        purpose=purpose,
                        shared=shared,
                        timeout=settings.VOLUME_CHAIN_WAIT_SECONDS if timeout is None else timeout,
                    )
                )
            # Merging a bottom layer away makes its children bottom layers: whoever waited on the old
            # key tries again with the new one.
            if _chain_keys(items) == keys:
                for item in items:
                    item.refresh_from_db()
                yield
                return


def _chain_keys(items) -> list[tuple[str, str]]:
    """A chain is every file qemu may open along with another: all the layers and volumes that descend
    from one bottom-most layer (restored volumes included). Its key is that layer's id; a volume on no
    layer is a chain of its own."""
    keys = set()
    for item in items:
        if isinstance(item, Volume):
            layer_id = Volume.objects.filter(pk=item.pk).values_list("backing_layer_id", flat=True).first()
        else:
            layer_id = item.pk
        bottom = _bottom_layer_id(layer_id) if layer_id is not None else None
        keys.add((item.region.volume_dir, str(bottom or item.pk)))
    return sorted(keys)


def _bottom_layer_id(layer_id) -> uuid.UUID | None:
    """The id of the bottom-most layer under `layer_id` (itself when it has no parent; None when it
    is gone), in one query however long the chain: every lock of a chain asks it twice."""
    layer = connection.ops.quote_name(Layer._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH RECURSIVE below (id, parent_id) AS ("
            f" SELECT id, parent_id FROM {layer} WHERE id = %s"
            f" UNION ALL SELECT up.id, up.parent_id FROM {layer} up JOIN below ON up.id = below.parent_id"
            ") SELECT id FROM below WHERE parent_id IS NULL",
            [Layer._meta.pk.get_db_prep_value(layer_id, connection)],
        )
        row = cursor.fetchone()
    # SQLite answers the hex string Django stores there, PostgreSQL a UUID.
    return uuid.UUID(str(row[0])) if row else None
