"""Sinks: consumers that follow the journal from their own cursors and write elsewhere."""
