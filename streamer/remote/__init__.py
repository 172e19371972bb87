"""Separation as a service, the client side: the wire protocol (shared with the server, ``bridge.serve``),
the engine's remote host (``RemoteLink``, ``remote_engine``) and the file client (``separate_file_remote``)."""
