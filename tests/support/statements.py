"""Helpers for the query-telemetry tests: tracer providers with in-memory exporters, apps, metric sums."""

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import asyncpg
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Sampler
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry
from sqlspec import SQLSpec
from sqlspec.adapters.asyncpg import AsyncpgConfig, AsyncpgDriver

from tests.support.postgres import PostgresServer

__all__ = (
    "DURATION",
    "all_span_text",
    "assert_one_cancelled_span",
    "asyncpg_spec",
    "create_table",
    "duration_counts",
    "label_sum",
    "provider_with_exporter",
    "session_dependency",
    "statement_spans",
    "uses_sqlspec_hooks",
)

DURATION = "db_client_operation_duration_seconds"


def provider_with_exporter(sampler: Sampler | None = None) -> tuple[TracerProvider, InMemorySpanExporter]:
    """Return an SDK tracer provider that exports every ended span to memory, synchronously."""
    provider = TracerProvider(sampler=sampler) if sampler is not None else TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def asyncpg_spec(pg: PostgresServer, *, bind_key: str | None = None) -> tuple[SQLSpec, AsyncpgConfig]:
    """Return a SQLSpec with one small asyncpg pool on the test server (the password sits in the DSN)."""
    spec = SQLSpec()
    config = spec.add_config(
        AsyncpgConfig(connection_config={"dsn": pg.dsn, "min_size": 1, "max_size": 2}, bind_key=bind_key)
    )
    return spec, config


async def create_table(pg: PostgresServer) -> str:
    """Create a fresh table (outside any instrumented session) and return its name."""
    name = f"items_{uuid.uuid4().hex[:10]}"
    connection = await asyncpg.connect(pg.dsn)
    try:
        await connection.execute(f"CREATE TABLE {name} (id serial PRIMARY KEY, name text NOT NULL, qty int)")
    finally:
        await connection.close()
    return name


def session_dependency(spec: SQLSpec, config: AsyncpgConfig) -> Callable[[], AsyncIterator[AsyncpgDriver]]:
    """Return the FastAPI dependency of SQLSpec's guide: a session from ``spec.provide_session(config)``."""

    async def db_session() -> AsyncIterator[AsyncpgDriver]:
        async with spec.provide_session(config) as session:
            yield session

    return db_session


def statement_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    """Return the exported CLIENT spans of sqlspec-ops, in the order they ended."""
    return [
        span
        for span in exporter.get_finished_spans()
        if span.kind is SpanKind.CLIENT and span.instrumentation_scope is not None
        and span.instrumentation_scope.name == "sqlspec_ops"
    ]  # fmt: skip


def assert_one_cancelled_span(exporter: InMemorySpanExporter) -> None:
    """Assert that exactly one statement span was exported and that it ended failed with ``CancelledError``."""
    (span,) = statement_spans(exporter)
    assert span.attributes is not None
    assert span.attributes["error.type"] == "CancelledError"
    assert span.status.status_code.name == "ERROR"
    assert span.end_time is not None


def uses_sqlspec_hooks(config: Any) -> bool:
    """Tell whether sqlspec-ops' statement hooks were merged into a config (rather than the driver timing them)."""
    lifecycle = config.observability_config.lifecycle if config.observability_config else None
    return bool(lifecycle and lifecycle.get("on_query_start"))


def all_span_text(spans: "Iterator[ReadableSpan] | list[ReadableSpan] | tuple[ReadableSpan, ...]") -> str:
    """Return every name, attribute key and value, event and status text of the spans, for leak checks."""
    chunks: list[str] = []
    for span in spans:
        chunks.append(span.name)
        chunks.extend(f"{key}={value!r}" for key, value in (span.attributes or {}).items())
        for event in span.events:
            chunks.append(event.name)
            chunks.extend(f"{key}={value!r}" for key, value in (event.attributes or {}).items())
        chunks.append(str(span.status.description))
    return "\n".join(chunks)


def duration_counts(registry: CollectorRegistry) -> dict[tuple[tuple[str, str], ...], float]:
    """Return ``db_client_operation_duration_seconds_count`` per label set."""
    counts: dict[tuple[tuple[str, str], ...], float] = {}
    for family in registry.collect():
        if family.name != DURATION:
            continue
        for sample in family.samples:
            if sample.name == f"{DURATION}_count":
                counts[tuple(sorted(sample.labels.items()))] = sample.value
    return counts


def label_sum(counts: dict[tuple[tuple[str, str], ...], float], **labels: Any) -> float:
    """Sum counts over every label set that has the given label values."""
    return sum(value for key, value in counts.items() if all((name, labels[name]) in key for name in labels))
