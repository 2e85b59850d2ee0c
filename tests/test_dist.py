"""A 2-process (gloo, CPU) sharded benchmark equals the single-process run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from tests.conftest import PUZZLES

SOL0 = "534678912672195348198342567859761423426853791713924856961537284287419635345286179"

SCRIPT = """
import sys, torch
from tabes.bench.sudoku import run_sudoku_bench
from tabes.models.mdm import MDM
model = MDM.from_pretrained(sys.argv[1])
run_sudoku_bench(sys.argv[2], ["confidence", "boe"], [30], sys.argv[3], model=model, progress=False, batch_size=2)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_all(procs, timeout: float) -> list[int]:
    """Exit codes of every process; when one fails (or time runs out) the others are killed,
    since a rank whose peer died waits forever at the next collective."""
    import time

    deadline = time.time() + timeout
    while any(p.poll() is None for p in procs):
        if time.time() > deadline or any(p.poll() not in (None, 0) for p in procs):
            for p in procs:
                if p.poll() is None:
                    p.kill()
            break
        time.sleep(0.1)
    return [p.wait() for p in procs]


def _strip(path):
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


def test_two_process_run_equals_single_process(tmp_path, tiny_sudoku_model):
    tiny_sudoku_model.save_pretrained(tmp_path / "m")
    csv = tmp_path / "p.csv"
    lines = [f"{PUZZLES[i % 2]},{SOL0 if i % 2 == 0 else ''},band{i % 2}" for i in range(7)]
    csv.write_text("puzzle,solution,source\n" + "\n".join(lines) + "\n")
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    single = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "m"), str(csv), str(tmp_path / "one")],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},  # the thread count of the sharded ranks: same float reduction order
    )
    assert single.returncode == 0, single.stderr
    # a free port can be taken by another process between the probe and the bind: try a few
    for attempt in range(3):
        port, logs, procs = _free_port(), [], []
        for rank in range(2):
            env = {
                **os.environ,
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "WORLD_SIZE": "2",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "OMP_NUM_THREADS": "1",
            }
            logs.append((tmp_path / f"rank{rank}.{attempt}.log").open("w+"))  # a file, not a pipe that could fill up
            cmd = [sys.executable, str(script), str(tmp_path / "m"), str(csv), str(tmp_path / "two")]
            procs.append(subprocess.Popen(cmd, env=env, stderr=logs[-1], stdout=subprocess.DEVNULL))
        codes = _wait_all(procs, timeout=240)
        errors = []
        for log in logs:
            log.seek(0)
            errors.append(log.read())
            log.close()
        if all(c == 0 for c in codes):
            break
        if not any("address already in use" in e.lower() for e in errors):
            raise AssertionError(f"ranks failed {codes}: {errors}")
    else:
        raise AssertionError(f"no free port after 3 attempts: {errors}")
    assert _strip(tmp_path / "two" / "results.jsonl") == _strip(tmp_path / "one" / "results.jsonl")
    assert len(_strip(tmp_path / "one" / "results.jsonl")) == 4


def test_shards_interleave_back_in_order():
    from tabes.dist import interleave

    items = list(range(11))
    for size in (1, 2, 3, 4):
        assert interleave([items[r::size] for r in range(size)]) == items
