"""`/metrics`: the `snap.replicate.*` metrics in Prometheus text format, computed from the database when
scraped (a custom collector, no process-local state). Readable with the configured scrape token
(`Authorization: Bearer <CLOUDDIGIT_METRICS_TOKEN>`) or by platform staff; anyone else gets 404."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import Http404, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from snapshots import replication_metrics

LABELS = ["project", "source_region", "target_region"]


class ReplicationCollector(Collector):
    def collect(self):
        lag = GaugeMetricFamily(
            "snap_replicate_lag_seconds",
            "Age of the oldest cross-region copy that has not landed (0: none pending); alert over 1800",
            labels=LABELS,
        )
        recent = GaugeMetricFamily(
            "snap_replicate_bytes_24h", "Bytes sent between regions by copies of the last 24 h", labels=LABELS
        )
        failures = GaugeMetricFamily(
            "snap_replicate_failures_24h",
            "Failed copy attempts in 24 h; alert over 0",
            labels=LABELS,
        )
        sent = CounterMetricFamily(
            "snap_replicate_bytes_sent", "Bytes sent between regions (metered transfer)", labels=LABELS
        )
        for pair in replication_metrics.pair_metrics():
            labels = [str(pair.project), pair.source_region, pair.target_region]
            lag.add_metric(labels, pair.lag_seconds)
            recent.add_metric(labels, pair.bytes_24h)
            failures.add_metric(labels, pair.failures_24h)
            sent.add_metric(labels, pair.bytes_sent_total)
        yield from (lag, recent, failures, sent)


registry = CollectorRegistry(auto_describe=False)
registry.register(ReplicationCollector())


def _allowed(request) -> bool:
    token = settings.METRICS_TOKEN
    given = request.headers.get("Authorization", "")
    if token and given.startswith("Bearer "):
        return hmac.compare_digest(given.removeprefix("Bearer ").encode(), token.encode())
    return request.user.is_authenticated and request.user.is_staff


def metrics(request):
    if not _allowed(request):
        raise Http404  # not a hint that the endpoint exists
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
