"""SparsePulse stream: posts from recorded files (and, next, live sources), keyword tracking,
micro-batch scoring and the SQLite store the dashboard reads."""
from .pipeline import Pipeline, PipelineStats
from .post import Post, Skip
from .replay import ReplaySource
from .store import Store
from .tracker import Topic, Tracker

__all__ = ["Post", "Skip", "ReplaySource", "Store", "Topic", "Tracker", "Pipeline", "PipelineStats"]
