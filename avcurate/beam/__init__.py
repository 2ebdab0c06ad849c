"""The Beam layer: thin transforms around the plain-Python stages."""

NAMESPACE = "avcurate"  # of every Beam counter the pipeline keeps
