"""gattn: fused sparse attention layers for graphs, sets and recommender inputs."""

__version__ = "0.1.0"
