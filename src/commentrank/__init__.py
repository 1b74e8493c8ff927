"""commentrank: train and serve reward models that rank the comments under a post."""

__version__ = "0.1.0"
