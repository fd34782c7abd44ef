"""Reports from the results table: one long table of numbers (`results`), read with pandas.

    results      the row contract (COLUMNS, make_row), summary files, reading run folders, SEAL's reference rows
    compare      `sealbench compare DIR`: every finished run side by side (Markdown, HTML, CSV, PNG)
    leaderboard  `sealbench leaderboard DIR...`: like-for-like rankings (Markdown + self-contained HTML)
    plots        the PNGs both draw (matplotlib, Agg)
    migrate      `sealbench migrate DIR`: old summary.json folders -> results-table rows
"""
from .results import (COLUMNS, continual_rows, csv_text, eval_set_id, find_run_dirs, headline, jsonl_text,
                      load_results, make_row, read_run_rows, reference_rows, rows_to_frame, run_markdown)

__all__ = ["COLUMNS", "continual_rows", "csv_text", "eval_set_id", "find_run_dirs", "headline", "jsonl_text",
           "load_results", "make_row", "read_run_rows", "reference_rows", "rows_to_frame", "run_markdown"]
