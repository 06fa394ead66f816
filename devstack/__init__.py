"""Local stand-ins for AWS services, for tests, the demo and the benchmarks."""
