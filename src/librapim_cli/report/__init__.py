"""Rendering of library results: rich tables, JSON documents, Chrome traces, CSV, plots."""
