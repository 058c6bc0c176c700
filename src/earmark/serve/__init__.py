"""Serve: the HTTP app, request audio decoding and limits, and a small client."""
