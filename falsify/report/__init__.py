"""Reports: Markdown per hypothesis, figures, the tidy CSV and the suite index."""

from falsify.report.writer import write_index, write_outcome

__all__ = ["write_index", "write_outcome"]
