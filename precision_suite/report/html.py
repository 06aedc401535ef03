"""HTML building blocks: escaped text, elements, number formatting and DataFrame tables.

Every piece of text goes through `html.escape` before it reaches the page: `element` escapes
its attribute values, and callers pass text content through `escape_text` or build it from
other `element` calls. Only this module and the page's fixed markup write raw HTML.
"""

import html
import math
import numbers

from precision_suite.report.labels import column_label
from precision_suite.results import STATUSES


def escape_text(value):
    """Return ``value`` as text with ``& < > " '`` escaped."""
    return html.escape(str(value), quote=True)


def element(tag, content="", **attributes):
    """Return ``<tag attributes>content</tag>``.

    ``content`` is HTML and is not escaped again. Attribute names use ``class_`` for
    ``class``; their values are escaped. An attribute whose value is None is left out.
    """
    parts = [tag]
    for name, value in attributes.items():
        if value is None:
            continue
        parts.append(f'{name.rstrip("_").replace("_", "-")}="{escape_text(value)}"')
    return f"<{' '.join(parts)}>{content}</{tag}>"


def status_class(status):
    """Return the CSS class that colours a status, or None for an unknown status."""
    return f"status-{status}" if status in STATUSES else None


def format_value(value):
    """Return a table cell's text: 4 significant digits for floats, empty for missing values."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        if math.isnan(number):
            return ""
        if math.isinf(number):
            return "inf" if number > 0 else "-inf"
        if number == int(number) and abs(number) < 1e15:
            return str(int(number))
        return f"{number:.4g}"
    return str(value)


def format_exact(value):
    """Return a float's shortest text that reads back to the same float, so near values stay distinct."""
    if value is None or (isinstance(value, numbers.Real) and math.isnan(float(value))):
        return ""
    if isinstance(value, numbers.Real):
        return repr(float(value))
    return str(value)


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def render_table(frame, lang, columns=None, empty_text="", caption=None, table_id=None):
    """Return an HTML table of ``frame``, one row per DataFrame row, every cell escaped.

    Parameters
    ----------
    frame : pandas.DataFrame
        The rows to show.
    lang : str
        Report language; sets the column headers (see `column_label`).
    columns : list of str, optional
        Columns to show, in order; defaults to all. Missing ones are skipped.
    empty_text : str
        Text shown instead of an empty table.
    caption : str, optional
        Table caption.
    table_id : str, optional
        The table's ``id`` attribute.

    Notes
    -----
    A row with a ``status`` column gets that status's CSS class, so the page colours it.
    """
    if frame is None or frame.empty:
        return element("p", escape_text(empty_text), class_="empty")
    columns = [column for column in (columns or list(frame.columns)) if column in frame.columns]

    header = "".join(element("th", escape_text(column_label(column, lang)), title=column, scope="col")
                     for column in columns)
    body = []
    for row in frame[columns].to_dict("records"):
        cells = "".join(
            element("td", escape_text(format_value(row[column])), class_="num" if _is_number(row[column]) else None)
            for column in columns
        )
        body.append(element("tr", cells, class_=status_class(row.get("status"))))

    parts = []
    if caption:
        parts.append(element("caption", escape_text(caption)))
    parts.append(element("thead", element("tr", header)))
    parts.append(element("tbody", "".join(body)))
    return element("div", element("table", "".join(parts), class_="data", id=table_id), class_="table-wrap")


def definition_list(pairs):
    """Return a ``<dl>`` of (term, value) text pairs, both escaped."""
    items = "".join(element("dt", escape_text(term)) + element("dd", escape_text(value)) for term, value in pairs)
    return element("dl", items)


def figure(base64_png, caption, empty_text):
    """Return a ``<figure>`` with an embedded PNG, or a paragraph when there is no plot."""
    if base64_png is None:
        return element("figure", element("figcaption", escape_text(caption)) + element("p", escape_text(empty_text),
                                                                                      class_="empty"))
    image = f'<img alt="{escape_text(caption)}" src="data:image/png;base64,{base64_png}">'
    return element("figure", image + element("figcaption", escape_text(caption)))
