"""The trainer's closing summary, read by its labels: tests assert on values, not on the columns' spacing."""

from __future__ import annotations

import re

# "  best params      max_depth=4, n_estimators=4": indented, a label, at least two spaces, the value;
# under `docker compose up` each line comes after the service's prefix ("trainer-1  | "), in
# train.yml's output it is a line of the debug message's literal block (indented further).
LINE = re.compile(r"^(?:\S+ +\| ?)?\s+(?P<label>\S+(?: \S+)*?) {2,}(?P<value>\S.*?)\s*$")


def summary(text: str) -> dict[str, list[str]]:
    """Give each labelled line of the summary in TEXT: label, then its values (grid edges repeat)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if match := LINE.match(line):
            found.setdefault(match["label"], []).append(match["value"])
    return found


def summary_value(text: str, label: str) -> str:
    """Give the value of the summary line LABEL in TEXT (the last run's, if there are several)."""
    values = summary(text).get(label)
    assert values, f"no summary line {label!r} in:\n{text[-3000:]}"
    return values[-1]
