"""Generated protobuf and gRPC code for the compactsim API (proto/compactsim/v1).

Produced by `make proto` (proto/generate.py); never edit these files by hand.
"""
