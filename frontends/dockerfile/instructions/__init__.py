"""Typed Dockerfile instructions."""
