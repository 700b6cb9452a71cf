"""Reads the sanitizers' report files that scripts/sanitize.sh collected and
says what they hold; exits 1 when one concerns dcxsec's C.

    python scripts/sanitizer_reports.py .sanitize/

An AddressSanitizer or UndefinedBehaviorSanitizer error fails wherever it
is (only dcxsec's C is instrumented).  A leak fails when its allocation
passed through dcxsec's C (the engine ``dcxsec/_tls``, ``_recvbuf``,
``_keepgil``: a frame in one of them, or a ``dcx_`` function); the others
are CPython's, OpenSSL's or a foreign tool's and are only counted.
"""
from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

OURS = re.compile(r"dcxsec/_(tls|recvbuf|keepgil)|\bdcx_\w+|csrc/")
LEAK = re.compile(r"^(Direct|Indirect) leak of (\d+) byte\(s\) in (\d+) object\(s\) allocated from:")


def blocks(text: str) -> list[list[str]]:
    """A report's paragraphs (separated by blank lines)."""
    out, current = [], []
    for line in text.splitlines():
        if line.strip():
            current.append(line)
        elif current:
            out.append(current)
            current = []
    if current:
        out.append(current)
    return out


def main(folder: str) -> int:
    files = sorted(Path(folder).glob("*"))
    errors, ours, theirs = [], [], Counter()
    for path in files:
        text = path.read_text(errors="replace")
        for block in blocks(text):
            head = block[0]
            if "ERROR: AddressSanitizer" in head or "runtime error:" in head:
                errors.append((path.name, "\n".join(block[:30])))
                continue
            m = LEAK.match(head)
            if not m:
                continue
            stack = "\n".join(block[1:])
            if OURS.search(stack):
                ours.append((path.name, "\n".join(block[:25])))
            else:
                top = next((line.split(" in ", 1)[1].split(" ")[0] for line in block[1:]
                            if " in " in line and "malloc" not in line and "alloc" not in
                            line.split(" in ", 1)[1].split(" ")[0]), "?")
                program = path.name.split(".")[1] if path.name.count(".") >= 2 else "?"
                theirs[f"{program}: {m.group(1).lower()} leak from {top}"] += int(m.group(2))
    print(f"{len(files)} report file(s); {len(errors)} sanitizer error(s); "
          f"{len(ours)} leak(s) through dcxsec's C; "
          f"{sum(1 for _ in theirs)} kind(s) of leak elsewhere (not dcxsec's)")
    for name, text in errors + ours:
        print(f"--- {name}\n{text}")
    for what, size in theirs.most_common(20):
        print(f"    elsewhere: {what}: {size} bytes")  # program: kind, first frame past malloc
    return 1 if errors or ours else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ".sanitize"))
