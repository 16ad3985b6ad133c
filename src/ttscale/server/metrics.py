"""Prometheus metrics in the text exposition format, rendered by hand (no dependency).

Everything is updated on the server's event loop, so plain counters need no lock.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

# Request latency buckets in seconds: from a cached fake answer to a long search.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
           300.0, 600.0)
# Paths reported by name; anything else is "other", so probing random paths cannot grow
# the label set without bound.
ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics")


@dataclass
class Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0
    n: int = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds
        self.n += 1


@dataclass
class Metrics:
    """Requests by endpoint and status, latency by endpoint; the service adds the rest.

    Example:
        >>> m = Metrics()
        >>> m.observe("/v1/completions", 200, 0.02)
        >>> 'ttscale_requests_total{endpoint="/v1/completions",status="200"} 1' in m.render(
        ...     prompt_tokens=10, completion_tokens=5, running=0, queued=0)
        True
    """

    requests: Counter[tuple[str, int]] = field(default_factory=Counter)
    latency: dict[str, Histogram] = field(default_factory=dict)

    @staticmethod
    def endpoint(path: str) -> str:
        return path if path in ENDPOINTS else "other"

    def observe(self, path: str, status: int, seconds: float) -> None:
        endpoint = self.endpoint(path)
        self.requests[(endpoint, status)] += 1
        self.latency.setdefault(endpoint, Histogram()).observe(seconds)

    def render(self, *, prompt_tokens: int, completion_tokens: int, running: int,
               queued: int) -> str:
        lines = [
            "# HELP ttscale_requests_total HTTP requests answered, by endpoint and status.",
            "# TYPE ttscale_requests_total counter",
        ]
        for (endpoint, status), count in sorted(self.requests.items()):
            lines.append(f'ttscale_requests_total{{endpoint="{endpoint}",status="{status}"}} '
                         f"{count}")
        lines += [
            "# HELP ttscale_tokens_total Tokens spent on answered requests, all samples and "
            "verifier calls, by kind.",
            "# TYPE ttscale_tokens_total counter",
            f'ttscale_tokens_total{{kind="prompt"}} {prompt_tokens}',
            f'ttscale_tokens_total{{kind="completion"}} {completion_tokens}',
            "# HELP ttscale_request_seconds Time from request to the end of the response.",
            "# TYPE ttscale_request_seconds histogram",
        ]
        for endpoint, h in sorted(self.latency.items()):
            cumulative = 0
            for bound, count in zip((*BUCKETS, float("inf")), h.counts, strict=True):
                cumulative += count
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                lines.append(f'ttscale_request_seconds_bucket{{endpoint="{endpoint}",'
                             f'le="{le}"}} {cumulative}')
            lines.append(f'ttscale_request_seconds_sum{{endpoint="{endpoint}"}} {h.total:.6f}')
            lines.append(f'ttscale_request_seconds_count{{endpoint="{endpoint}"}} {h.n}')
        lines += [
            "# HELP ttscale_requests_running Requests being solved now.",
            "# TYPE ttscale_requests_running gauge",
            f"ttscale_requests_running {running}",
            "# HELP ttscale_queue_length Requests admitted and waiting for a free slot.",
            "# TYPE ttscale_queue_length gauge",
            f"ttscale_queue_length {queued}",
        ]
        return "\n".join(lines) + "\n"
