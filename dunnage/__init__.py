"""Dunnage: optimal packing fallback for kube-scheduler and an LLM-serving operator."""

__version__ = "0.1.0"
