"""Helpers shared by the tests: offline images and roots (images.py), and per-area fixtures."""
