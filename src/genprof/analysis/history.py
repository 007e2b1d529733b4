"""A local history of runs in SQLite: key figures and tags, trends, regressions.

The store lives at, in order: the ``path`` given (``--db``), ``$GENPROF_HISTORY``,
``$XDG_DATA_HOME/genprof/history.sqlite``, ``~/.local/share/genprof/history.sqlite``.
It holds copies of figures, never the run files themselves: a damaged store is reported
(:class:`genprof.errors.UsageError` naming the file and the fix) and run files are untouched.

Concurrent writers are safe: WAL journal, a busy timeout, and writes in ``BEGIN IMMEDIATE``
transactions retried on "database is locked".

Regressions (see ``docs/analysis.md``): runs are taken in time order within a group (same run
name); for each run and figure, the baseline is the median of the previous ``window`` runs
(at least 2), the noise is ``max(3 * 1.4826 * MAD(previous), rel_floor * baseline)``; a run is
a regression when its figure is worse than the baseline by more than the noise.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from genprof.analysis.figures import FIGURES, compute_figures
from genprof.analysis.summary import percentile
from genprof.errors import UsageError
from genprof.model import Run

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
RECORDED_FIGURES = (
    "generation_time_s",
    "step_time_mean_s",
    "step_time_p95_s",
    "peak_reserved_bytes",
    "peak_allocated_bytes",
    "energy_per_generation_j",
    "output_fps",
    "run_time_s",
    "load_time_s",
)
BUSY_TIMEOUT_MS = 30_000
WRITE_RETRIES = 8
REGRESSION_WINDOW = 5
REGRESSION_K = 3.0
REGRESSION_REL_FLOOR = 0.05

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    started_at TEXT NOT NULL,
    started_unix_s REAL NOT NULL,
    recorded_unix_s REAL NOT NULL,
    device TEXT,
    end_status TEXT,
    source TEXT,
    tags_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS figures (
    run_pk INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    value REAL,
    spread REAL,
    reason TEXT,
    PRIMARY KEY (run_pk, name)
);
CREATE TABLE IF NOT EXISTS tags (
    run_pk INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (run_pk, key)
);
CREATE INDEX IF NOT EXISTS runs_by_time ON runs(started_unix_s);
CREATE INDEX IF NOT EXISTS tags_by_kv ON tags(key, value);
"""


def default_path() -> Path:
    env = os.environ.get("GENPROF_HISTORY")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "genprof" / "history.sqlite"


@dataclass
class HistoryEntry:
    pk: int
    run_id: str
    name: str
    started_at: str
    started_unix_s: float
    device: str | None
    end_status: str | None
    source: str | None
    tags: dict[str, Any]
    figures: dict[str, float | None] = field(default_factory=dict)
    spreads: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Regression:
    entry: HistoryEntry
    figure: str
    value: float
    baseline: float
    noise: float
    change_pct: float
    previous_runs: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.entry.run_id,
            "name": self.entry.name,
            "started_at": self.entry.started_at,
            "figure": self.figure,
            "value": self.value,
            "baseline": self.baseline,
            "noise": self.noise,
            "change_pct": self.change_pct,
            "previous_runs": self.previous_runs,
        }


def _tag_text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True)


def parse_tag_filters(items: Sequence[str] | None) -> dict[str, str]:
    """``["model=flux", "gpu=h100"]`` -> ``{"model": "flux", "gpu": "h100"}``."""
    out: dict[str, str] = {}
    for it in items or []:
        if "=" not in it or not it.split("=", 1)[0].strip():
            raise UsageError(f"tag filter {it!r} must look like KEY=VALUE, e.g. --tag model=flux")
        k, v = it.split("=", 1)
        out[k.strip()] = v.strip()
    return out


class HistoryStore:
    """The history database. Open with ``HistoryStore(path)``; every call opens its own connection."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_path()
        if self.path.exists() and self.path.is_dir():
            raise UsageError(f"history store {self.path} is a folder; give a file path with --db or GENPROF_HISTORY")
        self._initialised = False

    # ------------------------------------------------------------ connections
    def _damaged(self, exc: BaseException) -> UsageError:
        return UsageError(
            f"history store {self.path} is damaged or not a genprof history database ({exc}). Fix: move it aside "
            f"(mv '{self.path}' '{self.path}.bad') and genprof starts a new one, or pass another file with --db. "
            "Run files are not affected."
        )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create the folder for history store {self.path}: {exc}") from exc
        try:
            con = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_MS / 1000.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise UsageError(f"cannot open history store {self.path}: {exc}") from exc
        try:
            con.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            con.execute("PRAGMA foreign_keys = ON")
            if not self._initialised:
                self._init(con)
            yield con
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise
            raise self._damaged(exc) from exc
        finally:
            con.close()

    def _init(self, con: sqlite3.Connection) -> None:
        # switching to WAL needs the database to itself: two processes opening a new store at once
        # get "database is locked" here without the busy handler being called, so retry like a write
        mode = self._retry_locked(lambda: con.execute("PRAGMA journal_mode = WAL").fetchone())
        if mode is None or str(mode[0]).lower() != "wal":
            log.info("history store %s: journal mode %s (WAL not available on this filesystem)", self.path, mode)
        self._write(con, lambda c: c.executescript_in_tx(_SCHEMA))
        row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            self._write(con, lambda c: c.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)))
        elif int(row[0]) > SCHEMA_VERSION:
            raise UsageError(
                f"history store {self.path} was written by a newer genprof (schema {row[0]}); upgrade genprof "
                "or use another file with --db"
            )
        self._initialised = True

    def _retry_locked(self, fn: Any) -> Any:
        """Call ``fn()``, retrying with backoff while SQLite says another process holds the lock."""
        delay = 0.05
        for attempt in range(WRITE_RETRIES):
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if attempt == WRITE_RETRIES - 1:
                    raise UsageError(
                        f"history store {self.path} stayed locked by another process for too long; try again"
                    ) from exc
                time.sleep(delay)
                delay = min(1.0, delay * 2)
        return None  # pragma: no cover

    def _write(self, con: sqlite3.Connection, fn: Any) -> Any:
        """Run ``fn(tx)`` in a BEGIN IMMEDIATE transaction, retrying while another writer holds the lock."""
        self._retry_locked(lambda: con.execute("BEGIN IMMEDIATE"))
        try:
            result = fn(_Tx(con))
            con.execute("COMMIT")
            return result
        except BaseException:
            con.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------ writing
    def add(self, run: Run, *, source: str | None = None) -> int:
        """Record a run (its key figures and tags); return its row id. Adding a run twice keeps one row."""
        figs = compute_figures(run, RECORDED_FIGURES)
        device = run.gpus[0].name if run.gpus else "cpu"
        tags = {str(k): v for k, v in run.tags.items()}

        def tx(c: _Tx) -> int:
            row = c.execute("SELECT id FROM runs WHERE run_id = ?", (run.run_id,)).fetchone()
            if row is not None:
                return int(row[0])
            cur = c.execute(
                "INSERT INTO runs(run_id, name, started_at, started_unix_s, recorded_unix_s, device, end_status, "
                "source, tags_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run.run_id, run.name, run.started_at, run.started_unix_s, time.time(), device, run.end.status,
                 source, json.dumps(tags, sort_keys=True, default=str)),
            )
            pk = int(cur.lastrowid or 0)
            c.executemany(
                "INSERT INTO figures(run_pk, name, value, spread, reason) VALUES (?, ?, ?, ?, ?)",
                [(pk, n, m.value, m.spread, m.reason) for n, m in figs.items()],
            )
            c.executemany("INSERT INTO tags(run_pk, key, value) VALUES (?, ?, ?)",
                          [(pk, k, _tag_text(v)) for k, v in tags.items()])
            return pk

        with self._connect() as con:
            return int(self._write(con, tx))

    # ------------------------------------------------------------ reading
    def runs(self, *, tags: Mapping[str, str] | None = None, name: str | None = None,
             limit: int | None = None) -> list[HistoryEntry]:
        """Runs in time order (oldest first), optionally only those with all ``tags`` and ``name``."""
        sql = "SELECT id, run_id, name, started_at, started_unix_s, device, end_status, source, tags_json FROM runs r"
        where: list[str] = []
        args: list[Any] = []
        for k, v in (tags or {}).items():
            where.append("EXISTS (SELECT 1 FROM tags t WHERE t.run_pk = r.id AND t.key = ? AND t.value = ?)")
            args += [k, v]
        if name is not None:
            where.append("r.name = ?")
            args.append(name)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_unix_s, id"
        with self._connect() as con:
            rows = con.execute(sql, args).fetchall()
            entries = [
                HistoryEntry(pk=r[0], run_id=r[1], name=r[2], started_at=r[3], started_unix_s=r[4], device=r[5],
                             end_status=r[6], source=r[7], tags=json.loads(r[8]))
                for r in rows
            ]
            if limit is not None:
                entries = entries[-limit:]
            by_pk = {e.pk: e for e in entries}
            if by_pk:
                marks = ",".join("?" * len(by_pk))
                for pk, n, v, sp in con.execute(
                        f"SELECT run_pk, name, value, spread FROM figures WHERE run_pk IN ({marks})", list(by_pk)):
                    by_pk[pk].figures[n] = v
                    by_pk[pk].spreads[n] = sp
        return entries

    def trend(self, figure: str, *, tags: Mapping[str, str] | None = None,
              name: str | None = None) -> list[tuple[HistoryEntry, float | None]]:
        """The value of ``figure`` for each run, oldest first."""
        if figure not in FIGURES:
            raise UsageError(f"unknown figure {figure!r}; recorded figures: {', '.join(RECORDED_FIGURES)}")
        return [(e, e.figures.get(figure)) for e in self.runs(tags=tags, name=name)]

    def regressions(
        self,
        figures: Sequence[str] | None = None,
        *,
        tags: Mapping[str, str] | None = None,
        window: int = REGRESSION_WINDOW,
        k: float = REGRESSION_K,
        rel_floor: float = REGRESSION_REL_FLOOR,
    ) -> list[Regression]:
        """Runs whose figure got worse than the median of the previous runs by more than the noise."""
        return find_regressions(self.runs(tags=tags), figures, window=window, k=k, rel_floor=rel_floor)


class _Tx:
    """The connection inside a write transaction (keeps executescript from committing)."""

    def __init__(self, con: sqlite3.Connection) -> None:
        self.con = con

    def execute(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.con.execute(sql, args)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> sqlite3.Cursor:
        return self.con.executemany(sql, rows)

    def executescript_in_tx(self, script: str) -> None:
        for stmt in script.split(";"):
            if stmt.strip():
                self.con.execute(stmt)


def find_regressions(
    entries: Sequence[HistoryEntry],
    figures: Sequence[str] | None = None,
    *,
    window: int = REGRESSION_WINDOW,
    k: float = REGRESSION_K,
    rel_floor: float = REGRESSION_REL_FLOOR,
) -> list[Regression]:
    """Pure regression finder over entries in time order (see the module docstring)."""
    names = list(figures) if figures else list(RECORDED_FIGURES)
    for n in names:
        if n not in FIGURES:
            raise UsageError(f"unknown figure {n!r}; recorded figures: {', '.join(RECORDED_FIGURES)}")
    groups: dict[str, list[HistoryEntry]] = {}
    for e in entries:
        groups.setdefault(e.name, []).append(e)
    out: list[Regression] = []
    for group in groups.values():
        for fig in names:
            lower = FIGURES[fig].lower_is_better
            series = [(e, e.figures.get(fig)) for e in group]
            series_v = [(e, v) for e, v in series if v is not None]
            for i, (e, v) in enumerate(series_v):
                prev = [p for _, p in series_v[max(0, i - window):i]]
                if len(prev) < 2:
                    continue
                base = percentile(prev, 50)
                if base is None:
                    continue
                med_dev = percentile([abs(p - base) for p in prev], 50) or 0.0
                noise = max(k * 1.4826 * med_dev, rel_floor * abs(base))
                worse = (v - base) if lower else (base - v)
                if worse > noise:
                    pct = 100.0 * (v - base) / abs(base) if base else 0.0
                    out.append(Regression(e, fig, v, base, noise, pct, len(prev)))
    out.sort(key=lambda r: (r.entry.started_unix_s, r.figure))
    return out


__all__ = ["HistoryEntry", "HistoryStore", "Regression", "default_path", "find_regressions", "parse_tag_filters"]
