"""LeukEdge edge_app stage."""
