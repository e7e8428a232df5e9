"""Inference: windows and their blending, output sinks, and the predictor (no Lightning)."""
