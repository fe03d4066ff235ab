"""Validation: parity, accuracy and latency of a candidate against a reference."""
