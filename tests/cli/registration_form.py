"""Reading the page `patchwright setup` serves as a browser would: its form's action and
hidden inputs (shared by the setup tests and the guide walkthrough)."""

from __future__ import annotations

from html.parser import HTMLParser


class FormReader(HTMLParser):
    """The registration page's form: its action and hidden inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "form":
            self.action = attributes.get("action")
        elif tag == "input" and attributes.get("name"):
            self.fields[str(attributes["name"])] = attributes.get("value") or ""
