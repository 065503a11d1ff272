"""compactsim.v1: messages (*_pb2), service stubs (simulator_pb2_grpc)."""
