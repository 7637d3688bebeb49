"""snap.replicate.* metrics, failures and inter-region metering: real copies against SeaweedFS, and many
copy rows written directly for thresholds and query counts."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from snapshots import replication, replication_metrics, services
from snapshots.models import CopyFailure, InterRegionTransfer, Snapshot

MiB = 2**20


def _snap(run, actor, volume, name):
    snapshot = run(services.create_snapshot, actor=actor, volume=volume, name=name)
    snapshot.refresh_from_db()
    return snapshot


def copy_row(project, *, age_seconds=0, state=Snapshot.State.CREATING, sent=0, name="c", save=True):
    """A copy's row (dha → ctg) as the request side writes it, aged `age_seconds`."""
    row = Snapshot(
        project=project,
        region_id="bd-ctg-1",
        source_region_id="bd-dha-1",
        name=name,
        kind=Snapshot.Kind.VOLUME,
        consistency_requested=Snapshot.Consistency.CRASH,
        state=state,
        bytes_sent=sent,
        created_by="olga",
        created_at=timezone.now() - timedelta(seconds=age_seconds),
        completed_at=timezone.now() if state == Snapshot.State.AVAILABLE else None,
    )
    if save:
        row.save()
    return row


def test_a_landed_copy_is_counted_and_metered(run, operator, data_volume, image_stores, prod):
    copy = run(
        replication.copy_snapshot,
        actor=operator,
        snapshot=_snap(run, operator, data_volume, "one"),
        target_region="bd-ctg-1",
    )
    copy.refresh_from_db()
    assert copy.state == Snapshot.State.AVAILABLE, copy.last_error
    (pair,) = replication_metrics.pair_metrics()
    assert (pair.project, pair.source_region, pair.target_region) == (prod, "bd-dha-1", "bd-ctg-1")
    assert (pair.lag_seconds, pair.bytes_24h, pair.failures_24h) == (0, 4 * MiB, 0)
    assert pair.bytes_sent_total == 4 * MiB and pair.status == "healthy"
    transfer = InterRegionTransfer.objects.get()
    assert transfer.bytes_sent == 4 * MiB and transfer.month == timezone.now().date().replace(day=1)
    (charge,) = replication_metrics.usage(prod)
    assert charge.bytes_sent == 4 * MiB and str(charge.price) == "0.00"  # 4 MiB at 0.02/GiB


def test_a_failure_retried_until_it_landed_still_counts(
    run, operator, data_volume, image_stores, settings, django_capture_on_commit_callbacks
):
    snapshot = _snap(run, operator, data_volume, "one")
    good = settings.REGIONS["bd-ctg-1"]
    settings.REGIONS = {**settings.REGIONS, "bd-ctg-1": {**good, "s3_secret_key": "wrong-key-0123456789"}}
    with pytest.raises(Exception, match="403"), django_capture_on_commit_callbacks(execute=True):
        replication.copy_snapshot(actor=operator, snapshot=snapshot, target_region="bd-ctg-1")
    copy = Snapshot.objects.get(source_snapshot=snapshot)
    (pair,) = replication_metrics.pair_metrics()
    assert pair.failures_24h == 1 and pair.pending == 1 and pair.status == "alert"
    assert "s3_secret_key" in CopyFailure.objects.get().reason
    settings.REGIONS = {**settings.REGIONS, "bd-ctg-1": good}
    assert run(services.retry, actor=operator, snapshot=copy).state == Snapshot.State.AVAILABLE
    (pair,) = replication_metrics.pair_metrics()
    assert (pair.failures_24h, pair.pending, pair.lag_seconds) == (1, 0, 0)
    assert pair.alerts == ["1 failed copies in 24 h: see Diagnose on the copy"]
    later = timezone.now() + timedelta(hours=25)
    assert replication_metrics.pair_metrics(now=later)[0].failures_24h == 0


@pytest.mark.parametrize(
    ("age", "expected"), [(0, "healthy"), (599, "healthy"), (700, "warn"), (1800, "warn"), (1900, "alert")]
)
def test_lag_is_the_oldest_pending_copy_against_the_spec_thresholds(prod, regions, age, expected):
    copy_row(prod, age_seconds=age)
    copy_row(prod, age_seconds=age // 2, name="newer")
    copy_row(prod, age_seconds=99999, state=Snapshot.State.AVAILABLE, name="landed")
    (pair,) = replication_metrics.pair_metrics()
    assert abs(pair.lag_seconds - age) <= 2 and pair.status == expected and pair.pending == 2
    if expected == "alert":
        assert pair.alerts[0].startswith("replication stalled")


def test_no_pending_copy_is_zero_lag_and_pairs_are_per_project(prod, globex_main, regions):
    copy_row(prod, state=Snapshot.State.AVAILABLE, sent=5)
    copy_row(globex_main, age_seconds=100)
    mine = replication_metrics.pair_metrics(projects=type(prod).objects.filter(pk=prod.pk))
    assert [(p.project, p.lag_seconds, p.bytes_24h) for p in mine] == [(prod, 0, 5)]
    assert len(replication_metrics.pair_metrics()) == 2


def test_metrics_take_the_same_queries_for_a_thousand_copies(prod, regions, django_assert_max_num_queries):
    rows = [
        copy_row(prod, age_seconds=index, state=state, sent=index, name=f"c{index}", save=False)
        for index in range(1000)
        for state in [[Snapshot.State.AVAILABLE, Snapshot.State.CREATING, Snapshot.State.ERROR][index % 3]]
    ]
    Snapshot.objects.bulk_create(rows)
    CopyFailure.objects.bulk_create(
        CopyFailure(project=prod, source_region_id="bd-dha-1", target_region_id="bd-ctg-1", reason="x")
        for _ in range(300)
    )
    with django_assert_max_num_queries(4):
        (pair,) = replication_metrics.pair_metrics()
    assert pair.failures_24h == 300 and pair.pending == 666 and pair.bytes_24h == sum(range(1000))
    assert pair.lag_seconds >= 998
    with django_assert_max_num_queries(1):
        assert len(replication_metrics.in_flight(type(prod).objects.filter(pk=prod.pk))) == 50


# --- Stalled copies explain themselves (diagnosis) --------------------------------------------------


def _causes(copy):
    from snapshots import diagnosis

    copy = Snapshot.objects.select_related("region", "source_snapshot").get(pk=copy.pk)
    return {finding.cause: finding.detail for finding in diagnosis.diagnose(copy)}


def test_a_copy_waiting_on_a_source_that_is_not_available_says_what_holds_it(prod, image_stores):
    source = copy_row(prod, name="src")
    Snapshot.objects.filter(pk=source.pk).update(
        region_id="bd-dha-1", source_region=None, state=Snapshot.State.DELETING, step="merging data-01"
    )
    copy = copy_row(prod, age_seconds=2000)
    Snapshot.objects.filter(pk=copy.pk).update(source_snapshot=source)
    causes = _causes(copy)
    (detail,) = [d for c, d in causes.items() if c.startswith("The source snapshot is not Available")]
    assert detail == "src is Deleting: merging data-01 (no worker now)"
    assert not [c for c in causes if "object store" in c]  # the target answers


def test_a_target_store_that_does_not_answer_is_named_with_its_latency(prod, image_stores, settings):
    copy = copy_row(prod, age_seconds=2000)
    dead = {**settings.REGIONS["bd-ctg-1"], "s3_endpoint": "http://127.0.0.1:9"}
    settings.REGIONS = {**settings.REGIONS, "bd-ctg-1": dead}
    settings.REPLICATION_LINK_TIMEOUT_SECONDS = 1
    detail = _causes(copy)["The target region's object store does not answer"]
    assert detail.startswith("bd-ctg-1 did not answer in ") and " ms: " in detail


def test_a_copy_that_keeps_failing_is_set_aside_with_its_reasons(prod, image_stores):
    copy = copy_row(prod, state=Snapshot.State.ERROR)
    Snapshot.objects.filter(pk=copy.pk).update(last_error="403 from bd-ctg-1")
    for _ in range(3):
        replication_metrics.record_failure(copy, "403 from bd-ctg-1")
    assert _causes(copy)["This copy keeps failing"] == "3 failed attempts; last: 403 from bd-ctg-1"


def test_a_copy_whose_worker_keeps_dying_is_given_up_and_counted(prod, regions):
    from snapshots import work

    copy = copy_row(prod)
    work.give_up(copy, "its worker was lost 5 times")
    copy.refresh_from_db()
    assert copy.state == Snapshot.State.ERROR and copy.last_error.startswith("Gave up: its worker was lost")
    assert replication_metrics.pair_metrics()[0].failures_24h == 1
