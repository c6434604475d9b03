"""LeukEdge compress stage."""
