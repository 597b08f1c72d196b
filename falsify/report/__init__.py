"""Reports: Markdown per hypothesis, figures, the tidy CSV and the suite index."""

from falsify.report.writer import first_result_at, write_index, write_outcome

__all__ = ["first_result_at", "write_index", "write_outcome"]
