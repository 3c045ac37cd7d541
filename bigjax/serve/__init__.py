"""Serving an exported artifact: a micro-batching queue, the ASGI app, the uvicorn server, and a
loopback load-test client. Imports neither Flax nor the training loop (tested)."""
