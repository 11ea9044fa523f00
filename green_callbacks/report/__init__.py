"""Turning run records into summaries, tables, reports and plots."""
