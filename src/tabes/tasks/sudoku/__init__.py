"""9x9 Sudoku as a masked-diffusion task, in four parts (everything is importable from here):

- :mod:`~tabes.tasks.sudoku.formats`: the token layout, parsing, validation, boards, puzzle CSVs;
- :mod:`~tabes.tasks.sudoku.rules`: the exact solver, naked and hidden singles, and
  :class:`~tabes.tasks.sudoku.rules.SudokuRules`, the rules as a search's constraints;
- :mod:`~tabes.tasks.sudoku.puzzles`: random grids, minimal and hill-climbed hard puzzles, pools;
- :mod:`~tabes.tasks.sudoku.decode`: decoding puzzles with any sampler, and searching where the
  decode is invalid.
"""

from __future__ import annotations

from tabes.tasks.sudoku.decode import (  # noqa: F401
    DEFAULT_SEARCH,
    Solved,
    decode_puzzles,
    search_invalid,
)
from tabes.tasks.sudoku.formats import (  # noqa: F401
    _BIT2D,
    _POP,
    BOX,
    COL,
    MASK_ID,
    N_CELLS,
    PEERS,
    ROW,
    UNITS,
    VOCAB_SIZE,
    PuzzleRecord,
    band,
    clash_cells,
    find_clashes,
    format_board,
    from_ids,
    grid_str,
    parse_puzzle,
    parse_solution,
    read_csv,
    to_ids,
    validate_puzzle,
    verify,
)
from tabes.tasks.sudoku.puzzles import (  # noqa: F401
    HARD_CHUNK,
    POOL_CHUNK,
    _generate_chunk,
    _harden_chunk,
    _minimise_reference,
    _run_chunks,
    generate_hard_pool,
    generate_pool,
    generate_puzzles,
    harden,
    make_puzzle,
    minimise,
    random_grid,
    random_symmetry,
)
from tabes.tasks.sudoku.rules import (  # noqa: F401
    _PEER_MAT,
    _PEERS_T,
    _UNIT_MAT,
    SudokuRules,
    _jit,
    _masks,
    _place_hidden_single,
    _search,
    count_solutions,
    needs_search,
    needs_search_flags,
    singles_blanks,
    singles_closure,
    singles_fixpoint,
    solution_status,
    solve,
)
