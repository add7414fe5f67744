"""The README's "Who holds the connections" section runs as written: its app, leak warning line and /ops/pools excerpt.

The test reads the section's blocks, writes the python block to ``main.py``, serves it over a real PostgreSQL and
compares what it logs and serves with the text and JSON blocks (numbers that are durations are compared by kind,
not value; the temporary directory stands for the section's ``/srv/app``).
"""

import asyncio
import importlib.util
import json
import logging
import re
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.support.asgi import serving
from tests.support.postgres import PostgresServer
from tests.support.readme import readme_blocks
from tests.support.waiting import eventually

SHOWN_DIR = "/srv/app"
# Durations in the fragment are an example run's: compared by kind only.
MEASURED = {"held_ms", "db_time_ms", "oldest_transaction_s"}
_NUMBER = re.compile(r"\d+\.\d+")


def blocks(lang: str) -> list[str]:
    """Return the README section's fenced ``lang`` blocks."""
    return readme_blocks("Who holds the connections", lang)


def same_shape(shown: Any, real: Any, key: str = "") -> None:
    """Assert ``real`` has the fragment's keys and values (durations: any number)."""
    if isinstance(shown, dict):
        assert isinstance(real, dict), (key, real)
        assert set(shown) <= set(real), (key, sorted(set(shown) - set(real)))
        for name, value in shown.items():
            same_shape(value, real[name], name)
    elif isinstance(shown, list):
        assert isinstance(real, list), (key, real)
        assert len(shown) == len(real), (key, real)
        for a, b in zip(shown, real, strict=True):
            same_shape(a, b, key)
    elif key in MEASURED:
        assert isinstance(real, int | float), (key, real)
    else:
        assert shown == real, (key, shown, real)


def load_app(path: Path) -> Any:
    """Import the fragment's module from ``path`` and return its ``app``."""
    spec = importlib.util.spec_from_file_location("holders_readme_main", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app


async def test_fragment_app_logs_and_serves_what_the_fragment_shows(
    pg: PostgresServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fragment's app logs its leak line and serves its /ops/pools excerpt, as the fragment shows them."""
    (code,) = blocks("python")
    (line,) = blocks("text")
    (excerpt_text,) = blocks("json")
    assert "GRANT pg_read_all_stats TO app;" in blocks("sql")[0]
    setup = await asyncpg.connect(pg.dsn)
    try:
        await setup.execute("CREATE TABLE IF NOT EXISTS reports (id int PRIMARY KEY, views int NOT NULL)")
        await setup.execute("INSERT INTO reports VALUES (42, 0) ON CONFLICT DO NOTHING")
    finally:
        await setup.close()
    main = tmp_path / "main.py"
    main.write_text(code, encoding="utf-8")
    monkeypatch.setenv("DATABASE_URL", pg.dsn)
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    caplog.set_level(logging.INFO, logger="sqlspec_ops.pools")
    app = load_app(main)
    async with serving(app) as client:
        request = asyncio.create_task(client.get("/reports/42", headers={"X-Request-ID": "req-42"}))

        def warned() -> list[logging.LogRecord]:
            return [r for r in caplog.records if r.name == "sqlspec_ops.pools" and r.levelno == logging.WARNING]

        await eventually(warned, timeout=3, what="the leak warning")

        async def sampled() -> bool:
            entry = (await client.get("/ops/pools")).json()["pools"][0]
            return bool(entry.get("server", {}).get("idle_in_transaction") == 1)

        await eventually(sampled, timeout=3, what="a server view with the open transaction")
        entry = (await client.get("/ops/pools")).json()["pools"][0]
        assert (await request).json() == {"id": 42}
    (record,) = warned()
    rendered = logging.Formatter("%(levelname)s %(name)s: %(message)s").format(record)
    rendered = rendered.replace(str(tmp_path), SHOWN_DIR)
    assert _NUMBER.sub("N", rendered) == _NUMBER.sub("N", line.strip())
    real = json.loads(json.dumps(entry).replace(str(tmp_path), SHOWN_DIR))
    same_shape(json.loads(excerpt_text), real)


def test_shape_comparison_fails_on_a_different_state() -> None:
    """Negative control: the comparison used above rejects a holder in another state or with a missing key."""
    shown = {"holders": [{"state": "idle in transaction", "held_ms": 1.0}]}
    with pytest.raises(AssertionError):
        same_shape(shown, {"holders": [{"state": "idle", "held_ms": 2.0}]})
    with pytest.raises(AssertionError):
        same_shape(shown, {"holders": [{"held_ms": 2.0}]})
    same_shape(shown, {"holders": [{"state": "idle in transaction", "held_ms": 2.5, "extra": 1}]})
