"""The HTML of report/ (leaderboard, comparison, run view): jinja2 templates in templates/ with
autoescape on, so every text that reaches a page is escaped by the template engine, never by hand.
What a template must not escape (the CSS, a table or body already rendered) is passed as `Markup`;
`page` and `table` return plain `str` (a `Markup` would escape what is added to it)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from markupsafe import Markup


@lru_cache(maxsize=1)
def environment():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    return Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True,
                       trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, undefined=StrictUndefined)


def render(template: str, **values) -> Markup:
    """`templates/<template>` rendered with `values` (escaped unless Markup)."""
    return Markup(environment().get_template(template).render(**values))


def page(title: str, body: str, css: str) -> str:
    """A self-contained HTML page (inline CSS, no external assets) around an already rendered body."""
    return str(render("page.html.j2", title=title, body=Markup(body), css=Markup(css)))


def table(df, emphasis: list[bool] | None = None, titles: tuple[str, list[str]] | None = None) -> str:
    """The DataFrame as an HTML table (pandas' to_html layout), every header and cell escaped; rows
    marked in `emphasis` in <em>; titles=(column, one text per row) become that column's hover text."""
    cells = df.astype(str)
    hover_col, hover = titles if titles is not None else (None, None)
    rows = []
    for i, values in enumerate(cells.itertuples(index=False, name=None)):
        rows.append((bool(emphasis[i]) if emphasis is not None else False,
                     [(v, hover[i] if c == hover_col else None) for c, v in zip(cells.columns, values)]))
    return str(render("table.html.j2", columns=[str(c) for c in cells.columns], rows=rows)).rstrip("\n")
