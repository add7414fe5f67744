"""Read Prometheus samples the way PromQL does, from a registry or from an exposition text.

``cumulative`` buckets raw samples the way a histogram does, so a test can check that a histogram saw
exactly the values that were measured.
"""

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

__all__ = ("Buckets", "bucket_counts", "cumulative", "parse_samples", "sample_value", "subtract")

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


def cumulative(samples: Iterable[float], like: Buckets) -> Buckets:
    """Return the cumulative counts raw ``samples`` would give in the buckets of ``like`` (same upper bounds)."""
    values = list(samples)
    return {bound: float(sum(1 for value in values if value <= bound)) for bound in like}


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
