"""The separation service on Ray Serve (``stemstream serve``): the batched model deployment, the WebSocket
ingress that keeps each stream's window state, and the status endpoint. The one place Ray Serve is imported."""
