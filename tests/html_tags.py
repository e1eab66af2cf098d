"""A small HTML reader for the tests that check what a page contains (the pictures' HTML,
the timeline, notebook views): tags with their attributes and the text, without a browser."""

from __future__ import annotations

from html.parser import HTMLParser


class Parsed(HTMLParser):
    """Tags with their attributes, and the text inside each element with a class."""

    def __init__(self, page: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.texts: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        if data.strip():
            self.texts.append(data.strip())

    def find(self, tag: str, **attrs) -> list[dict]:
        return [a for t, a in self.tags if t == tag
                and all(a.get(k.rstrip("_")) == v for k, v in attrs.items())]

    def with_class(self, name: str) -> list[tuple[str, dict]]:
        return [(t, a) for t, a in self.tags if name in (a.get("class") or "").split()]
