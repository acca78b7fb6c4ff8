"""The I/O shell: HTTP server, live projection worker, SSE, ingest and the tally CLI."""
