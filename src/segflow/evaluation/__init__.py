"""Evaluation: metrics, post-processing and the test phase."""
