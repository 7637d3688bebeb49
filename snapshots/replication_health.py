"""Inter-region links for cross-region copies: does the target region's object store answer, how fast, and
what did the last copy of each region pair move per second (Snapshots → Replication, Network →
Inter-region; and the stall causes in `diagnosis`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings

from clouddigit.backends.objectstore import ObjectStore, ObjectStoreError
from clouddigit.compute.models import Region
from snapshots.models import Snapshot


@dataclass(frozen=True)
class StoreCheck:
    region: str
    answers: bool
    latency_ms: int
    detail: str


def check_store(region: Region) -> StoreCheck:
    """HEAD the region's bucket once, waiting at most `REPLICATION_LINK_TIMEOUT_SECONDS` (checked from
    where the console runs, which in the embedded setup is the source region)."""
    started = time.monotonic()
    try:
        store = ObjectStore.for_region(
            region.config, timeout_seconds=settings.REPLICATION_LINK_TIMEOUT_SECONDS
        )
        detail = store.check_bucket()
        answers = True
    except (ObjectStoreError, KeyError, ValueError) as error:
        detail, answers = str(error), False
    return StoreCheck(region.pk, answers, int((time.monotonic() - started) * 1000), detail)


@dataclass(frozen=True)
class Link:
    source_region: str
    target_region: str
    target: StoreCheck
    last_copy: Snapshot | None

    @property
    def last_throughput(self) -> float | None:
        """Bytes per second the pair's last landed copy sent (None: none landed yet)."""
        copy = self.last_copy
        if copy is None or copy.completed_at is None:
            return None
        return copy.bytes_sent / max((copy.completed_at - copy.created_at).total_seconds(), 0.001)

    @property
    def last_copy_at(self) -> datetime | None:
        return self.last_copy.completed_at if self.last_copy else None


def links(pairs: list[tuple[str, str]], projects) -> list[Link]:
    """Each (source, target) region pair's link: the target store checked once per region, and the last
    landed copy among `projects` (one query per pair: pairs are few, bounded by the regions)."""
    regions = Region.objects.in_bulk({target for _, target in pairs})
    checks = {slug: check_store(region) for slug, region in regions.items()}
    found = []
    for source, target in sorted(set(pairs)):
        last = (
            Snapshot.objects.filter(
                project__in=projects,
                source_region_id=source,
                region_id=target,
                state=Snapshot.State.AVAILABLE,
            )
            .order_by("-completed_at")
            .first()
        )
        found.append(Link(source, target, checks[target], last))
    return found
