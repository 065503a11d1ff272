"""compactsim's client side: the `compactsim` command line (client/cli.py, the remote
commands in client/remote.py) and the Python client of the gRPC API (client/api.py).
Depends on the spec codec and the generated messages, never on the server."""
