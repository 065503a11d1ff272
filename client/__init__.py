"""compactsim's client side: the `compactsim` command line (and, later, the gRPC client)."""
