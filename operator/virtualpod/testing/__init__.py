"""Test support: the emulated Kubernetes API and helpers for tests, benchmarks and the demo."""
