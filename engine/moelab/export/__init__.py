"""Exports of checkpoints: ONNX with router outputs (for the routing inspector) and plain HF dirs."""
