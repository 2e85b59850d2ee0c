"""Sudoku grids and files: the token layout, parsing, validation, boards and puzzle CSVs.

A grid is a list of 81 ints in row-major order, 0 for a blank and 1..9 for a digit.
The model sees token ids: digit ``d`` is id ``d - 1`` and the mask token is id ``MASK_ID``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

VOCAB_SIZE = 10  # ids 0..8 are digits 1..9, id 9 is the mask
MASK_ID = 9
N_CELLS = 81

ROW = [i // 9 for i in range(N_CELLS)]
COL = [i % 9 for i in range(N_CELLS)]
BOX = [(i // 27) * 3 + (i % 9) // 3 for i in range(N_CELLS)]
PEERS = [[j for j in range(N_CELLS) if j != i and (ROW[i] == ROW[j] or COL[i] == COL[j] or BOX[i] == BOX[j])] for i in range(N_CELLS)]
UNITS = [[j for j in range(N_CELLS) if key[j] == u] for key in (ROW, COL, BOX) for u in range(9)]  # 27 units
_POP = [bin(m).count("1") for m in range(512)]
_BIT2D = {1 << (d - 1): d for d in range(1, 10)}


# --------------------------------------------------------------------------- parsing


def parse_puzzle(text: str) -> list[int]:
    """Parse an 81-cell puzzle: digits 1-9, '0' or '.' for blanks; whitespace is ignored.

    Accepts one line of 81 characters or 9 lines of 9. Raises ``ValueError`` naming the bad
    character (with its row and column) or the wrong length. Does not check for clashes;
    see :func:`validate_puzzle`.

    Example:
        >>> parse_puzzle("53..7...." + "." * 72)[:5]
        [5, 3, 0, 0, 7]
    """
    if not isinstance(text, str):
        raise TypeError(f"puzzle must be a str, got {type(text).__name__}")
    chars = [ch for ch in text if not ch.isspace()]
    for k, ch in enumerate(chars):
        if ch not in "0123456789.":
            where = f" (row {k // 9 + 1}, column {k % 9 + 1})" if k < N_CELLS else ""
            raise ValueError(f"bad character {ch!r} at position {k + 1}{where}; use digits 1-9 and '0' or '.' for blanks")
    if len(chars) != N_CELLS:
        raise ValueError(f"a 9x9 puzzle has 81 cells, got {len(chars)}")
    return [0 if ch == "." else int(ch) for ch in chars]


def find_clashes(cells: list[int]) -> list[str]:
    """Describe every repeated digit in a row, column or box, e.g. ``"digit 5 twice in row 1"``."""
    problems = []
    for kind, key in (("row", ROW), ("column", COL), ("box", BOX)):
        for unit in range(9):
            seen: dict[int, int] = {}
            for i in range(N_CELLS):
                d = cells[i]
                if key[i] == unit and d:
                    seen[d] = seen.get(d, 0) + 1
            for d, n in sorted(seen.items()):
                if n > 1:
                    problems.append(f"digit {d} appears {n} times in {kind} {unit + 1}")
    return problems


def validate_puzzle(cells: list[int]) -> None:
    """Raise ``ValueError`` naming the row, column or box where givens clash."""
    if len(cells) != N_CELLS or any(not 0 <= d <= 9 for d in cells):
        raise ValueError(f"expected 81 values in 0..9, got {len(cells)} values")
    problems = find_clashes(cells)
    if problems:
        raise ValueError("clashing givens: " + "; ".join(problems))


def clash_cells(grid: list[int]) -> list[int]:
    """Cells whose digit repeats in their row, column or box."""
    return [i for i in range(N_CELLS) if grid[i] and any(grid[j] == grid[i] for j in PEERS[i])]


def verify(grid: list[int], puzzle: list[int] | None = None) -> bool:
    """True when ``grid`` is a complete valid Sudoku that keeps every given of ``puzzle``."""
    if len(grid) != N_CELLS or any(not 1 <= d <= 9 for d in grid):
        return False
    if find_clashes(grid):
        return False
    return puzzle is None or all(not p or p == g for p, g in zip(puzzle, grid))


def to_ids(cells: list[int]) -> list[int]:
    """Grid (0 = blank) to model ids (blank -> ``MASK_ID``)."""
    return [MASK_ID if d == 0 else d - 1 for d in cells]


def from_ids(ids: list[int]) -> list[int]:
    """Model ids to grid digits (mask -> 0)."""
    return [0 if t == MASK_ID else int(t) + 1 for t in ids]


def grid_str(cells: list[int]) -> str:
    """81-character string, '0' for blanks."""
    return "".join(str(d) for d in cells)


def format_board(cells: list[int], wrong: set[int] | None = None) -> str:
    """A 9x9 board with box separators; cells in ``wrong`` are marked with '*'."""
    wrong = wrong or set()
    lines = []
    for r in range(9):
        if r and r % 3 == 0:
            lines.append("------+-------+------")
        parts = []
        for c in range(9):
            if c and c % 3 == 0:
                parts.append("|")
            i = r * 9 + c
            d = cells[i]
            parts.append(("." if d == 0 else str(d)) + ("*" if i in wrong else ""))
        lines.append(" ".join(parts))
    return "\n".join(lines)


@dataclass(frozen=True)
class PuzzleRecord:
    """One row of a puzzle file: ``puzzle`` exactly as read, parsed ``cells``, optional solution,
    and the file ``line`` it came from (the header is line 1)."""

    puzzle: str
    cells: list[int]
    solution: list[int] | None
    source: str
    line: int = 0


def band(source: str) -> str:
    """Source band of a ``list:detail`` source string: the list name (``"all"`` when empty)."""
    return source.split(":", 1)[0] or "all"


def parse_solution(text: str, cells: list[int]) -> list[int]:
    """Parse a ``solution`` field and check that it is a complete valid grid keeping the givens
    of ``cells``; ``ValueError`` messages name the solution column."""
    try:
        sol = parse_puzzle(text)
    except ValueError as err:
        raise ValueError(f"column 'solution': {err}") from None
    if not verify(sol, cells):
        raise ValueError("column 'solution': not a complete valid grid that keeps the puzzle's givens")
    return sol


def read_csv(path: str | Path, *, skipped: list[tuple[int, str]] | None = None) -> list[PuzzleRecord]:
    """Read a CSV with a ``puzzle`` column and optional ``solution`` and ``source`` columns.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file and the
    line of a malformed or clashing puzzle (or of a bad solution, naming that column), or the
    byte offset of text that is not UTF-8. With a ``skipped`` list, bad rows are appended to it
    as ``(line, reason)`` and left out instead of raising.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"puzzle file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start})") from None
    records = []
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None or "puzzle" not in reader.fieldnames:
        raise ValueError(f"{path}: expected a CSV header with a 'puzzle' column, got {reader.fieldnames}")
    for line, row in enumerate(reader, start=2):
        try:
            if row["puzzle"] is None:
                raise ValueError("the row has no 'puzzle' field")
            cells = parse_puzzle(row["puzzle"])
            validate_puzzle(cells)
            sol = parse_solution(row["solution"], cells) if row.get("solution") else None
        except ValueError as err:
            if skipped is None:
                raise ValueError(f"{path}, line {line}: {err}") from None
            skipped.append((line, str(err)))
            continue
        records.append(PuzzleRecord(row["puzzle"], cells, sol, row.get("source") or "", line))
    return records
