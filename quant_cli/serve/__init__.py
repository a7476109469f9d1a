"""Bundles, batch predict and the HTTP server (DESIGN.md §7): one verified artefact from a run to an endpoint."""
