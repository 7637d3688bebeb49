"""Cross-region replication monitoring: the spec's `snap.replicate.*` metrics per project and region pair,
the copies in flight, and inter-region transfer metering. Shown on Snapshots → Replication, on the policy
page, in the API and at `/metrics`; each is computed with a fixed number of aggregate queries, however
many copies there are.

- `lag_seconds`: age of the oldest copy that has not landed (Creating or Error), counted from when it was
  requested (its row's `created_at`); 0 when none is pending.
- `bytes_24h`: bytes sent by copies requested or landed in the last 24 hours.
- `failures_24h`: failed copy attempts in the last 24 hours (`CopyFailure` rows, so a copy that failed,
  was retried and landed still counts).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Min, Q, QuerySet, Sum
from django.utils import timezone

from clouddigit.compute.models import Project, Region
from snapshots.models import CopyFailure, InterRegionTransfer, Snapshot

HEALTHY_BELOW_SECONDS = 600
ALERT_ABOVE_SECONDS = 1800
WINDOW = timedelta(hours=24)
IN_FLIGHT_SHOWN = 50
PENDING = (Snapshot.State.CREATING, Snapshot.State.ERROR)


@dataclass(frozen=True)
class PairMetrics:
    project: Project
    source_region: str
    target_region: str
    lag_seconds: int
    bytes_24h: int
    failures_24h: int
    bytes_sent_total: int
    pending: int

    @property
    def status(self) -> str:
        return status(self.lag_seconds, self.failures_24h)

    @property
    def alerts(self) -> list[str]:
        found = []
        if self.lag_seconds > ALERT_ABOVE_SECONDS:
            found.append(f"replication stalled: lag {self.lag_seconds} s is over {ALERT_ABOVE_SECONDS} s")
        if self.failures_24h:
            found.append(f"{self.failures_24h} failed copies in 24 h: see Diagnose on the copy")
        return found


def status(lag_seconds: int, failures_24h: int) -> str:
    """The spec's thresholds: lag under 600 s is healthy, over 1800 s (or any failure in 24 h) alerts."""
    if lag_seconds > ALERT_ABOVE_SECONDS or failures_24h > 0:
        return "alert"
    return "healthy" if lag_seconds < HEALTHY_BELOW_SECONDS else "warn"


def copies() -> QuerySet[Snapshot]:
    return Snapshot.objects.filter(source_region__isnull=False)


def _scoped(queryset: QuerySet, projects: QuerySet[Project] | None, region: Region | None, target: str):
    if projects is not None:
        queryset = queryset.filter(project__in=projects)
    if region is not None:
        queryset = queryset.filter(Q(source_region=region) | Q(**{target: region}))
    return queryset


def pair_metrics(
    projects: QuerySet[Project] | None = None, region: Region | None = None, now: datetime | None = None
) -> list[PairMetrics]:
    """The metrics of every (project, source region, target region) that has copies, failures or metered
    transfer; `projects` None means all (for `/metrics`), `region` keeps pairs either end of which it is.
    Four queries."""
    now = now or timezone.now()
    since = now - WINDOW
    pending = Q(state__in=PENDING)
    rows = (
        _scoped(copies(), projects, region, "region")
        .values("project_id", "source_region_id", "region_id")
        .annotate(
            oldest=Min("created_at", filter=pending),
            pending=Count("id", filter=pending),
            recent=Sum("bytes_sent", filter=Q(created_at__gte=since) | Q(completed_at__gte=since)),
        )
        .order_by()
    )
    failures = (
        _scoped(CopyFailure.objects.filter(failed_at__gte=since), projects, region, "target_region")
        .values("project_id", "source_region_id", "target_region_id")
        .annotate(count=Count("id"))
        .order_by()
    )
    totals = (
        _scoped(InterRegionTransfer.objects.all(), projects, region, "target_region")
        .values("project_id", "source_region_id", "target_region_id")
        .annotate(sent=Sum("bytes_sent"))
        .order_by()
    )
    by_pair: dict[tuple, dict] = {}
    for row in rows:
        key = (row["project_id"], row["source_region_id"], row["region_id"])
        oldest = row["oldest"]
        by_pair.setdefault(key, {}).update(
            lag=max(int((now - oldest).total_seconds()), 0) if oldest else 0,
            pending=row["pending"],
            recent=row["recent"] or 0,
        )
    for row in failures:
        key = (row["project_id"], row["source_region_id"], row["target_region_id"])
        by_pair.setdefault(key, {})["failures"] = row["count"]
    for row in totals:
        key = (row["project_id"], row["source_region_id"], row["target_region_id"])
        by_pair.setdefault(key, {})["sent"] = row["sent"] or 0
    named = Project.objects.select_related("account").in_bulk({key[0] for key in by_pair})
    return [
        PairMetrics(
            project=named[key[0]],
            source_region=key[1],
            target_region=key[2],
            lag_seconds=values.get("lag", 0),
            bytes_24h=values.get("recent", 0),
            failures_24h=values.get("failures", 0),
            bytes_sent_total=values.get("sent", 0),
            pending=values.get("pending", 0),
        )
        for key, values in sorted(by_pair.items(), key=lambda item: (str(named[item[0][0]]), item[0][1:]))
    ]


def in_flight(projects: QuerySet[Project], region: Region | None = None) -> list[Snapshot]:
    """The copies not landed yet (Creating or Error), oldest first; at most `IN_FLIGHT_SHOWN`."""
    queryset = _scoped(copies().filter(state__in=PENDING), projects, region, "region")
    return list(
        queryset.select_related("region", "source_snapshot", "project__account").order_by("created_at")[
            :IN_FLIGHT_SHOWN
        ]
    )


# --- Failures and metering, written by the copy worker -------------------------------------------


def record_failure(copy: Snapshot, reason: str) -> None:
    assert copy.source_region_id is not None, "only a copy fails as a copy"
    CopyFailure.objects.create(
        project_id=copy.project_id,
        source_region_id=copy.source_region_id,
        target_region_id=copy.region_id,
        copy=copy,
        reason=reason[:2000],
    )


def month_of(moment: datetime) -> date:
    return moment.date().replace(day=1)


def meter(copy: Snapshot, sent: int, now: datetime | None = None) -> None:
    """Add `sent` bytes to the project's inter-region transfer of this month (call inside the transaction
    that adds them to the copy's `bytes_sent`)."""
    if not sent:
        return
    month = month_of(now or timezone.now())
    fields = {
        "project_id": copy.project_id,
        "source_region_id": copy.source_region_id,
        "target_region_id": copy.region_id,
        "month": month,
    }
    with transaction.atomic():
        if not InterRegionTransfer.objects.filter(**fields).update(bytes_sent=F("bytes_sent") + sent):
            transfer, created = InterRegionTransfer.objects.get_or_create(
                **fields, defaults={"bytes_sent": sent}
            )
            if not created:
                InterRegionTransfer.objects.filter(pk=transfer.pk).update(bytes_sent=F("bytes_sent") + sent)


@dataclass(frozen=True)
class Charge:
    month: date
    source_region: str
    target_region: str
    bytes_sent: int

    @property
    def gib(self) -> Decimal:
        return Decimal(self.bytes_sent) / Decimal(2**30)

    @property
    def price(self) -> Decimal:
        return (self.gib * price_per_gib()).quantize(Decimal("0.01"))


def price_per_gib() -> Decimal:
    return Decimal(settings.INTER_REGION_PRICE_PER_GIB)


def usage(project: Project, months: int = 12) -> list[Charge]:
    """The project's inter-region transfer per month and region pair, newest month first."""
    rows = InterRegionTransfer.objects.filter(project=project).order_by(
        "-month", "source_region_id", "target_region_id"
    )
    return [
        Charge(row.month, row.source_region_id, row.target_region_id, row.bytes_sent)
        for row in rows[: months * 8]
    ]


def copy_charge(copy: Snapshot) -> Charge:
    """What one copy's bytes cost, as inter-region transfer (shown on the copy's page)."""
    return Charge(month_of(copy.created_at), copy.source_region_id or "", copy.region_id, copy.bytes_sent)
