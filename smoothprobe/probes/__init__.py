"""Measurements taken around an optimizer step: one probe class per module, each with a cost."""
