"""The background render worker: server, client library (no printing), journal."""
