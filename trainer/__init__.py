"""Builds, trains and measures the CNN of an architecture (Paddle)."""
