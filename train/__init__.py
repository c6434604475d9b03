"""LeukEdge train stage."""
