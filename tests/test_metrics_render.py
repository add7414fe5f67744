"""The exposition: OpenMetrics for Prometheus takes prometheus_client's faster escaping only when it changes nothing."""

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import choose_encoder

from sqlspec_ops._metrics import _fast_openmetrics, metrics_for, render

# What Prometheus 3 sends when it scrapes.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=underscores;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
)


def _registry_with_samples() -> CollectorRegistry:
    registry = CollectorRegistry()
    metrics = metrics_for(registry)
    metrics.wait_time.labels("primary").observe(0.02)
    metrics.operation_duration.labels("postgresql", "SELECT", "primary", "").observe(0.003)
    metrics.timeouts.labels('we"ird\\pool').inc()
    return registry


def test_the_fast_path_still_applies_to_what_prometheus_asks_for() -> None:
    """prometheus_client still negotiates its partial-based OpenMetrics encoder: if it changes shape, this fails.

    The fast path halves the render time with 8 pools (benchmarks/render.py); without it the 10 ms budget is missed.
    """
    encoder, content_type = choose_encoder(PROMETHEUS_ACCEPT)
    assert content_type.startswith("application/openmetrics-text")
    assert _fast_openmetrics(encoder) is not None, "prometheus_client changed choose_encoder(): re-measure the render"


def test_the_fast_path_writes_the_same_bytes_as_the_negotiated_encoder() -> None:
    """For our metric names the faster escaping is byte-for-byte what the negotiated one writes."""
    registry = _registry_with_samples()
    encoder, _ = choose_encoder(PROMETHEUS_ACCEPT)
    body, _ = render(registry, PROMETHEUS_ACCEPT)
    assert body == encoder(registry)


def test_a_name_outside_the_legacy_character_set_falls_back() -> None:
    """A registry holding a UTF-8 metric name is rendered by the negotiated encoder, not the fast path."""
    registry = _registry_with_samples()
    Counter("requests.by.city", "A dotted name the two escapings write differently.", registry=registry).inc()
    encoder, _ = choose_encoder(PROMETHEUS_ACCEPT)
    fast = _fast_openmetrics(encoder)
    assert fast is not None
    assert fast(registry) != encoder(registry)  # the control: here the two escapings differ
    body, _ = render(registry, PROMETHEUS_ACCEPT)
    assert body == encoder(registry)
