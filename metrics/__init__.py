"""Shared metrics, one module per family. Each metric is a pure function on numpy arrays or torch tensors."""
