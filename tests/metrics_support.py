"""Reading the Prometheus endpoint of a local Ray (`ClusterConfig.metrics_export_port`) in tests."""

from __future__ import annotations

import re
import socket
import time
import urllib.error
import urllib.request

import pytest

SCRAPE_TIMEOUT_S = 90.0
_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> list[tuple[str, dict[str, str], float]]:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return []
    series = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m and not line.startswith("#"):
            series.append((m.group(1), dict(_LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return series


def value(series, metric: str, labels: dict[str, str]) -> float | None:
    """Sum of the samples of `metric` whose labels include `labels` (None when absent)."""
    hits = [v for n, ls, v in series if n == metric and all(ls.get(k) == want for k, want in labels.items())]
    return sum(hits) if hits else None


def wait_for(port: int, expected: dict[tuple, float]) -> list:
    """Poll the endpoint until every (name, labels) in `expected` reaches its value, bounded in time."""
    deadline = time.monotonic() + SCRAPE_TIMEOUT_S
    series: list = []
    while time.monotonic() < deadline:
        series = scrape(port)
        got = {key: value(series, key[0], dict(key[1])) for key in expected}
        if all(got[k] == v for k, v in expected.items()):
            return series
        time.sleep(1.0)
    got = {key: value(series, key[0], dict(key[1])) for key in expected}
    pytest.fail(f"metrics did not reach {expected} within {SCRAPE_TIMEOUT_S}s; last scrape: {got}")
