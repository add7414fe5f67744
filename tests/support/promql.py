"""Read Prometheus samples the way PromQL does, from a registry or from an exposition text.

``histogram_quantile`` here is PromQL's: it finds the bucket holding the requested rank and interpolates
linearly inside it, so a test asserting on it checks what a dashboard would show, bucket layout included.
"""

import math
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

__all__ = ("Buckets", "bucket_counts", "histogram_quantile", "parse_samples", "sample_value", "subtract")

Buckets = dict[float, float]  # upper bound -> cumulative count


def bucket_counts(registry: CollectorRegistry, name: str, labels: Mapping[str, str]) -> Buckets:
    """Return the cumulative bucket counts of one histogram series in a registry."""
    buckets: Buckets = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name != f"{name}_bucket":
                continue
            rest = {k: v for k, v in sample.labels.items() if k != "le"}
            if rest == dict(labels):
                buckets[float(sample.labels["le"])] = sample.value
    return buckets


def histogram_quantile(q: float, buckets: Buckets) -> float:
    """Return the ``q`` quantile of cumulative buckets like PromQL's ``histogram_quantile``.

    Raises:
        ValueError: If there are no observations.

    """
    bounds = sorted(buckets)
    total = buckets[math.inf]
    if total <= 0:
        msg = "the histogram has no observations"
        raise ValueError(msg)
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # PromQL returns the highest finite bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def subtract(after: Buckets, before: Buckets) -> Buckets:
    """Return the observations made between two readings of the same histogram."""
    return {bound: count - before.get(bound, 0.0) for bound, count in after.items()}


def parse_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Parse a text exposition into ``(name, labels, value)`` samples."""
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def sample_value(samples: Iterable[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float | None:
    """Return the value of the sample with this name and exactly these labels (None when absent)."""
    for sample_name, sample_labels, value in samples:
        if sample_name == name and sample_labels == labels:
            return value
    return None
