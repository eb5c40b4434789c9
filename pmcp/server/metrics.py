"""Prometheus metrics in the server's own registry (so tests and several apps never collide)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

KNOWN_PATHS = ("/mcp", "/health", "/metrics")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.http_requests = Counter(
            "pmcp_http_requests", "HTTP requests by path and status", ["path", "status"], registry=r
        )
        self.tool_calls = Counter(
            "pmcp_tool_calls", "Tool calls by tool and outcome", ["tool", "outcome"], registry=r
        )
        self.tool_seconds = Histogram("pmcp_tool_call_seconds", "Tool call latency", ["tool"], registry=r)
        self.proxmox_seconds = Histogram(
            "pmcp_proxmox_request_seconds", "Proxmox API request latency", ["method"], registry=r
        )
        self.proxmox_errors = Counter(
            "pmcp_proxmox_errors", "Proxmox API errors by status", ["status"], registry=r
        )
        self.proxmox_shared = Counter(
            "pmcp_proxmox_shared_reads",
            "Proxmox GETs answered by an identical one already in flight (not sent again)",
            registry=r,
        )

    def observe_http(self, path: str, status: int) -> None:
        label = path if path in KNOWN_PATHS else "other"
        self.http_requests.labels(label, str(status)).inc()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
