"""Text for terminals: tables of aligned columns, as doctor, bench and ops print them."""

from __future__ import annotations


def table(rows: list[list[str]]) -> str:
    """Give rows as left-aligned columns, the first row as the header, underlined."""
    widths = [max(len(row[index]) for row in rows) for index in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
