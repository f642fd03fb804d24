"""The outcomes page (``/outcomes``): per agent preset and model, how many tasks got their pull
request merged, in how many attempts, at what cost and how fast (pure rendering of
:class:`~bot.operations.outcomes.OutcomeRecord`; the numbers are defined in
:data:`~bot.operations.outcomes.DEFINITIONS`)."""

from __future__ import annotations

from collections.abc import Sequence

from bot.operations.outcomes import DEFINITIONS, OUTCOME_TASK_LIMIT, OutcomeRecord
from bot.web.pages.html import duration, e, money

TITLE = "Outcomes per agent and model"
NO_OUTCOMES = "No tasks yet: the records appear once agents have worked on issues."
DEFAULT_MODEL = "(preset default)"
NO_PRESET = "(none)"
CAPTION = (
    "One row per agent preset and model, over the newest {limit:,} tasks. "
    "Finished tasks are merged, closed or failed; the merge rate counts merged among finished. "
    "Cost per merged PR divides the cost of all the pair's tasks, merged or not, by the merged ones. "
    "Times are medians from a task's creation. A dash: no task to measure yet."
)

#: (record attribute, column heading): every column but preset and model is a number.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("tasks", "Tasks"),
    ("merged", "Merged"),
    ("closed", "Closed unmerged"),
    ("failed", "Failed"),
    ("in_progress", "In progress"),
    ("merge_rate", "Merge rate"),
    ("attempts_per_merged_pr", "Attempts per merged PR"),
    ("cost_per_merged_pr_usd", "Cost per merged PR"),
    ("cost_usd", "Total cost"),
    ("median_time_to_pr_s", "Median time to PR"),
    ("median_time_to_merge_s", "Median time to merge"),
    ("ci_retries_per_task", "CI retries per task"),
)

DASH = '<span class="muted">-</span>'


def cell(attribute: str, value: float | int | None) -> str:
    """One number as the page shows it (a dash for a number that does not exist yet)."""
    if value is None:
        return DASH
    if attribute == "merge_rate":
        return f"{value:.0%}"
    if attribute in ("cost_usd", "cost_per_merged_pr_usd"):
        return money(value)
    if attribute.endswith("_s"):
        return duration(value)
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def render_outcomes(records: Sequence[OutcomeRecord], *, limit: int = OUTCOME_TASK_LIMIT) -> str:
    """The records as a table (a row per pair, numbers right-aligned, headings explained on hover)."""
    heading = f"<h1>{e(TITLE)}</h1>"
    if not records:
        return f'{heading}<p class="empty">{e(NO_OUTCOMES)}</p>'
    head = '<th scope="col" title="{}">Preset</th><th scope="col" title="{}">Model</th>'.format(
        e(DEFINITIONS["preset"]), e(DEFINITIONS["model"])
    ) + "".join(
        f'<th scope="col" class="num" title="{e(DEFINITIONS[attribute])}">{e(label)}</th>'
        for attribute, label in COLUMNS
    )
    rows = []
    for record in records:
        numbers = "".join(
            f'<td class="num" data-field="{e(attribute)}">{cell(attribute, getattr(record, attribute))}</td>'
            for attribute, _ in COLUMNS
        )
        model = e(record.model) if record.model else f'<span class="muted">{e(DEFAULT_MODEL)}</span>'
        rows.append(
            f'<tr data-preset="{e(record.preset)}" data-model="{e(record.model)}">'
            f'<th scope="row">{e(record.preset or NO_PRESET)}</th><td>{model}</td>{numbers}</tr>'
        )
    definitions = "".join(
        f"<dt>{e(label)}</dt><dd>{e(DEFINITIONS[attribute])}</dd>" for attribute, label in COLUMNS
    )
    return (
        f"{heading}"
        '<table class="outcomes">'
        f"<caption>{e(CAPTION.format(limit=limit))}</caption>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f'<details class="definitions"><summary>What each column means</summary><dl>{definitions}</dl></details>'
    )


__all__ = ["COLUMNS", "render_outcomes"]
