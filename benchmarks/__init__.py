"""LeukEdge benchmarks stage."""
