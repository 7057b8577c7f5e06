"""Metrics as ``evaluate`` modules stored in this repository and loaded by path (``evaluate.load("metrics/NAME")``)."""
