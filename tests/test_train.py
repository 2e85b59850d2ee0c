from __future__ import annotations

import json

import numpy as np
import torch

from tabes.models.mdm import MDM, MDMConfig
from tabes.tasks import sudoku
from tabes.train import TrainConfig, make_batch, mdm_loss, train


def test_make_batch_keeps_givens_visible():
    p, s = sudoku.generate_puzzles(8, seed=3)
    inputs, targets, masked, t = make_batch(p, s, 0.0, np.random.default_rng(0))
    assert inputs.shape == targets.shape == masked.shape == (8, 81) and t.shape == (8,)
    assert masked.any(1).all()
    assert torch.equal(inputs[~masked], targets[~masked])
    assert (inputs[masked] == sudoku.MASK_ID).all()
    # givens (non-blank cells of the transformed puzzle) are never masked when p_full_grid = 0
    assert (masked.sum(1) <= 81 - 17).all()


def test_training_reduces_loss_quickly():
    torch.manual_seed(0)
    model = MDM(MDMConfig(d_model=32, n_layers=2, n_heads=2))
    p, s = sudoku.generate_puzzles(64, seed=4)
    rng = np.random.default_rng(0)
    batch = make_batch(p, s, 0.2, rng)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    with torch.no_grad():
        first = float(mdm_loss(model, *batch))
    for _ in range(60):
        loss = mdm_loss(model, *make_batch(p, s, 0.2, rng))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        last = float(mdm_loss(model, *batch))
    assert last < first - 0.1, (first, last)


def test_trainer_resumes(tmp_path):
    cfg = dict(
        out=str(tmp_path),
        minutes=1,
        batch_size=16,
        eval_every=5,
        eval_puzzles=4,
        pool_size=20,
        log_every=5,
        model=dict(d_model=16, n_layers=1, n_heads=2),
    )
    state = train(TrainConfig(max_steps=5, **cfg), progress=False)
    assert state["step"] == 5
    meta = json.loads((tmp_path / "train_state.json").read_text())
    assert meta["step"] == 5 and meta["config"]["batch_size"] == 16
    state = train(TrainConfig(max_steps=8, **cfg), resume=True, progress=False)
    assert state["step"] == 8
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [5]  # only full log intervals are logged
    assert any("eval_solved" in r for r in log)
    assert MDM.from_pretrained(tmp_path).config.d_model == 16


def test_sigterm_saves_and_resumes(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    code = (
        "from tabes.train import TrainConfig, train\n"
        f"train(TrainConfig(out={str(tmp_path)!r}, minutes=5, max_steps=100000, batch_size=8, eval_every=100000, eval_puzzles=2,"
        " pool_size=10, log_every=1, model=dict(d_model=16, n_layers=1, n_heads=2)), progress=False)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    log = tmp_path / "train_log.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (log.is_file() and log.read_text().count("\n") >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    meta = json.loads((tmp_path / "train_state.json").read_text())
    assert meta["step"] >= 3
    state = train(
        TrainConfig(
            out=str(tmp_path),
            minutes=1,
            max_steps=meta["step"] + 2,
            batch_size=8,
            eval_every=1000,
            eval_puzzles=2,
            pool_size=10,
            model=dict(d_model=16, n_layers=1, n_heads=2),
        ),
        resume=True,
        progress=False,
    )
    assert state["step"] == meta["step"] + 2
