"""Generated gRPC/protobuf code for proto/dunnage/solver/v1/solver.proto (make proto)."""
