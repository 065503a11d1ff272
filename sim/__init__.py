"""compactsim's model of Linux physical memory management: a pure library.

`sim.run.run(config)` simulates one machine for one spec and seed and returns a
`RunResult`. Nothing here imports grpc, protobuf or prometheus_client, reads the wall
clock (except to report progress) or keeps global state.
"""
