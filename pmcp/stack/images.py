"""The images of the stack. Production defaults are the public images; tests and air-gapped hosts override
them through the environment (``PMCP_PYTHON_BASE_IMAGE``, ``PMCP_CADDY_IMAGE``, ``PMCP_PROMETHEUS_IMAGE``,
``PMCP_MCP_IMAGE_REPO``), so the same install code runs against images made offline."""

from __future__ import annotations

import os

from pmcp import __version__

PYTHON_BASE = "python:3.11-slim"
CADDY = "caddy:2.10-alpine"
PROMETHEUS = "prom/prometheus:v3.5.0"
MCP_REPO = "pmcp/mcp-server"


def python_base() -> str:
    return os.environ.get("PMCP_PYTHON_BASE_IMAGE") or PYTHON_BASE


def caddy() -> str:
    return os.environ.get("PMCP_CADDY_IMAGE") or CADDY


def prometheus() -> str:
    return os.environ.get("PMCP_PROMETHEUS_IMAGE") or PROMETHEUS


def build_id(pmcp_sha256: str, base: str, dockerfile: str) -> str:
    """What the MCP image is made of: this pmcp file, the base image name and the Dockerfile."""
    import hashlib

    return hashlib.sha256(f"{pmcp_sha256}\n{base}\n{dockerfile}".encode()).hexdigest()


def mcp_image(version: str = __version__, digest: str | None = None) -> str:
    """The MCP server image: a Python base plus this very pmcp file, built locally.

    With a build id (see build_id: the pmcp file, base and Dockerfile), the tag names exactly what the
    image holds, so "the image for the running file is present" is one lookup, and an update is due
    exactly when the tag differs.
    """
    repo = os.environ.get("PMCP_MCP_IMAGE_REPO") or MCP_REPO
    tag = f"{version}-{digest[:12]}" if digest else version
    return f"{repo}:{tag}"


def mcp_image_for(pmcp_sha256: str, base: str | None = None, version: str = __version__) -> str:
    """The MCP image tag install uses for a pmcp file (by its sha256) built on ``base``: what
    `pmcp bundle create` must tag, so an air-gapped install finds the image present and builds nothing."""
    from pmcp.stack.render import template_text

    return mcp_image(version, build_id(pmcp_sha256, base or python_base(), template_text("Dockerfile")))
