#!/usr/bin/env python3
"""lock-subset LOCK ROOTS: print the part of the pip-compile lock LOCK that the requirements in ROOTS need.

One lock, each image its part: the runtime image (scheduler and workers) installs what
docker/runtime.in names and everything that pulls in, the trainer image the whole lock on top.
The part is found through the lock's own `# via` annotations (each entry lists every package of
the lock that requires it), and each entry is printed as the lock has it: version and hashes.
ROOTS is a requirements file (`name==version`, `name[extra]`, comments; `-r`/`-c` lines skipped).
Exits 1 naming a root the lock lacks. Standard library only: it runs on the base image's Python.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

# A lock entry starts with a pinned requirement at the start of a line; its hashes and `# via`
# comments follow, indented.
ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==")
NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name: str) -> str:
    """Give NAME as the package index compares names (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(text: str) -> dict[str, tuple[list[str], set[str]]]:
    """Give each entry of a lock, by canonical name: its requirement and hash lines, and the packages it is `via`."""
    entries: dict[str, tuple[list[str], set[str]]] = {}
    current = None
    for line in text.splitlines():
        match = ENTRY.match(line)
        if match:
            current = canonical(match.group(1))
            entries[current] = ([line], set())
        elif current is None or not line.startswith(" "):
            current = None
        elif line.lstrip().startswith("--hash"):
            entries[current][0].append(line)
        else:
            # "    # via dask", "    # via", "    #   dask", "    #   -r requirements.in"
            words = line.strip().lstrip("#").strip()
            words = words.removeprefix("via").strip()
            if words and not words.startswith("-"):
                entries[current][1].add(canonical(words.split()[0]))
    return entries


def parse_roots(text: str) -> list[str]:
    """Give the canonical names a requirements file asks for."""
    roots = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            roots.append(canonical(NAME.match(line).group(1)))
    return roots


def subset(entries: dict[str, tuple[list[str], set[str]]], roots: list[str]) -> list[str]:
    """Give the names of the entries ROOTS need, in the lock's order: the roots, and each entry via one already needed."""
    missing = [root for root in roots if root not in entries]
    if missing:
        raise KeyError(", ".join(missing))
    needed = set(roots)
    grew = True
    while grew:
        grew = False
        for name, (_, parents) in entries.items():
            if name not in needed and parents & needed:
                needed.add(name)
                grew = True
    return [name for name in entries if name in needed]


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] in ("-h", "--help"):
        print("usage: lock-subset LOCK ROOTS   (prints the part of LOCK that ROOTS needs)", file=sys.stderr)
        return 2
    lock, roots = (Path(arg) for arg in argv)
    entries = parse_lock(lock.read_text())
    try:
        names = subset(entries, parse_roots(roots.read_text()))
    except KeyError as error:
        print(f"lock-subset: {roots} asks for {error.args[0]}, which {lock} does not pin", file=sys.stderr)
        return 1
    for name in names:
        print("\n".join(entries[name][0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
