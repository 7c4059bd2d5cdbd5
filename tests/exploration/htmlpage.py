"""Reading the report pages back: the text of elements by id, the line-item rows, the links."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from html.parser import HTMLParser

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Row:
    attrs: dict
    cells: list[str] = field(default_factory=list)


class Page(HTMLParser):
    """`ids[id]` the text of each element with an id; `rows` every <tr> with its cells' text;
    `links` every href; `tags` every start tag seen (with its attributes)."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.ids: dict[str, str] = {}
        self.rows: list[Row] = []
        self.links: list[str] = []
        self.tags: list[tuple[str, dict]] = []
        self._open: list[tuple[str, str | None, list[str]]] = []  # (tag, id, text parts)
        self._row: Row | None = None
        self._cell: list[str] | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "a" and "href" in a:
            self.links.append(a["href"])
        if tag == "tr":
            self._row = Row(a)
            self.rows.append(self._row)
        if tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif self._cell is not None:
            self._cell.append(" ")  # a tag inside a cell separates words (`<div>` notes)
        if tag not in VOID:
            self._open.append((tag, a.get("id"), []))

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.cells.append(" ".join("".join(self._cell).split()))
            self._cell = None
        if tag == "tr":
            self._row = None
        while self._open:
            t, i, parts = self._open.pop()
            text = " ".join("".join(parts).split())
            if i is not None:
                self.ids[i] = text
            if self._open:
                self._open[-1][2].append(text + " ")
            if t == tag:
                break

    def handle_data(self, data):
        if self._open:
            self._open[-1][2].append(data)
        if self._cell is not None:
            self._cell.append(data)

    def line_rows(self) -> dict[str, Row]:
        return {r.attrs["data-line-id"]: r for r in self.rows if "data-line-id" in r.attrs}


def amount(text: str) -> Decimal:
    """A shown amount as a Decimal: `−1,234.50` → -1234.50 (currency codes and spaces ignored)."""
    t = text.replace("\u2212", "-").replace(",", "")
    t = "".join(ch for ch in t if ch.isdigit() or ch in ".-")
    if not t or t in ("-", "."):
        raise ValueError(f"no amount in {text!r}")
    return Decimal(t)
