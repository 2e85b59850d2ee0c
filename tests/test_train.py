from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tabes.models.mdm import MDM, MDMConfig
from tabes.tasks import sudoku
from tabes.train import TrainConfig, make_batch, mdm_loss, train


def _tiny(out, **overrides) -> TrainConfig:
    """A seconds-long run of a one-layer model: one worker, eager, few evaluation puzzles."""
    base = dict(out=str(out), eval_puzzles=2, workers=1, compile=False, model=dict(d_model=16, n_layers=1, n_heads=2))
    return TrainConfig(**{**base, **overrides})


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
        workers=1,
        compile=False,  # compilation is tested on its own; here it would only cost time
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
    """SIGTERM is sent only once training has logged steps (a start-up of any length is waited
    for, with a generous limit), then the run must save and a resume must continue from it."""
    import signal
    import subprocess
    import sys
    import time

    code = (
        "from tabes.train import TrainConfig, train\n"
        f"train(TrainConfig(out={str(tmp_path)!r}, minutes=10, max_steps=100000, batch_size=8, eval_every=100000, eval_puzzles=2,"
        " pool_size=10, workers=1, compile=False, log_every=1, model=dict(d_model=16, n_layers=1, n_heads=2)), progress=False)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    log = tmp_path / "train_log.jsonl"
    deadline = time.time() + 300
    while not (log.is_file() and log.read_text().count("\n") >= 3):
        if proc.poll() is not None:
            raise AssertionError(f"training exited early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("training logged no steps within 300 s")
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    meta = json.loads((tmp_path / "train_state.json").read_text())
    assert meta["step"] >= 3
    cfg = _tiny(tmp_path, minutes=1, max_steps=meta["step"] + 2, batch_size=8, eval_every=1000, pool_size=10)
    state = train(cfg, resume=True, progress=False)
    assert state["step"] == meta["step"] + 2


def test_bf16_step_follows_the_fp32_step():
    """One bf16-autocast step changes the weights like the fp32 step does (same direction, close
    values) and keeps float32 master weights."""
    from tabes.train import TrainStep, make_optimizer

    p, s = sudoku.generate_puzzles(16, seed=5)
    batch = make_batch(p, s, 0.2, np.random.default_rng(0))
    moved = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = MDM(MDMConfig(d_model=32, n_layers=2, n_heads=2)).train()
        before = model.head.weight.detach().clone()
        loss = TrainStep(model, make_optimizer(model, 1e-2, 0.0), precision=precision, compile=False)(*batch)
        assert model.head.weight.dtype == torch.float32 and np.isfinite(loss)
        moved[precision] = (model.head.weight.detach() - before).flatten()
    cos = torch.nn.functional.cosine_similarity(moved["fp32"], moved["bf16"], dim=0)
    assert cos > 0.95, float(cos)


def test_compiled_step_equals_the_eager_step():
    """torch.compile must not change what a step computes (float32, so the match is tight)."""
    from tabes.train import TrainStep, make_optimizer

    p, s = sudoku.generate_puzzles(8, seed=6)
    batch = make_batch(p, s, 0.2, np.random.default_rng(1))
    losses, heads = [], []
    for compile in (False, True):
        torch.manual_seed(0)
        model = MDM(MDMConfig(d_model=16, n_layers=1, n_heads=2)).train()
        step = TrainStep(model, make_optimizer(model, 1e-2, 0.0), precision="fp32", compile=compile)
        losses.append([step(*batch) for _ in range(2)])
        heads.append(model.head.weight.detach().clone())
    assert np.allclose(losses[0], losses[1], atol=1e-5), losses
    assert torch.allclose(heads[0], heads[1], atol=1e-5)


def test_sample_indices_draws_the_hard_share():
    from tabes.train import sample_indices

    hard = np.zeros(1000, bool)
    hard[:100] = True  # 10% hard
    idx = sample_indices(hard, 20000, 0.5, np.random.default_rng(0))
    share = hard[idx].mean()  # 0.5 from the hard draw + 0.5 * 0.1 from the uniform draw
    assert abs(share - 0.55) < 0.02, share
    assert abs(hard[sample_indices(hard, 20000, 0.0, np.random.default_rng(1))].mean() - 0.1) < 0.02


def test_pool_files_carry_the_hard_flags(tmp_path):
    from tabes.train import load_pool, save_pool

    p, s = sudoku.generate_pool(6, seed=2, workers=1)
    save_pool(tmp_path / "a.npz", p, s)
    np.savez_compressed(tmp_path / "old.npz", puzzles=p, solutions=s)  # a file written before the flags existed
    puzzles, solutions, hard = load_pool([tmp_path])
    assert puzzles.shape == (12, 81) and hard.shape == (12,)
    expected = [sudoku.needs_search(list(map(int, x))) for x in p]
    assert hard.tolist() == expected + expected


def test_evaluation_scores_each_band_of_an_eval_file(tmp_path):
    from tests.conftest import PUZZLES

    sol = "534678912672195348198342567859761423426853791713924856961537284287419635345286179"
    f = tmp_path / "dev.csv"
    f.write_text(f"puzzle,solution,source\n{PUZZLES[0]},{sol},a:1\n{PUZZLES[0]},{sol},a:2\n{PUZZLES[0]},{sol},b:1\n{PUZZLES[1]},,b:2\n")
    cfg = _tiny(tmp_path / "run", max_steps=2, batch_size=4, eval_every=2, pool_size=8, eval_file=str(f), eval_per_band=1)
    train(cfg, progress=False)
    rec = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines() if "bands" in x][-1]
    assert rec["band_puzzles"] == {"a": 1, "b": 1} and set(rec["bands"]) == {"a", "b"}
    assert all(0 <= v <= 1 for v in rec["bands"].values())


def test_stuck_samples_leave_nothing_for_singles():
    hard = sudoku.parse_puzzle("800000000003600000070090200050007000000045700000100030001000068008500010090000400")
    p = np.array([hard] * 16, np.uint8)
    s = np.array([sudoku.solve(list(hard))] * 16, np.uint8)
    inputs, targets, masked, t = make_batch(p, s, 0.0, np.random.default_rng(0), closure_frac=1.0)
    board = np.where(masked.numpy(), 0, targets.numpy() + 1)
    assert (sudoku.singles_closure(board, board * 0 + targets.numpy() + 1) == board).all()  # no single left to place
    stuck = int((sudoku.singles_closure(p[:1], s[:1]) == 0).sum())  # blanks singles leave in the puzzle itself
    assert stuck > 50 and (masked.sum(1) <= stuck).all() and (masked.sum(1) == stuck).any() and (masked.sum(1) < stuck).any()
    assert torch.allclose(t, masked.float().sum(1) / torch.from_numpy((p == 0).sum(1)).float())  # share of the blanks
    plain = make_batch(p, s, 0.0, np.random.default_rng(0))[2]
    board = np.where(plain.numpy(), 0, targets.numpy() + 1)
    assert (sudoku.singles_closure(board, targets.numpy() + 1) != board).any()  # a uniform mask usually leaves singles


def test_closure_keeps_uniform_masks_for_puzzles_singles_solve():
    easy = sudoku.parse_puzzle("530070000600195000098000060800060003400803001700020006060000280000419005000080079")
    p = np.array([easy] * 8, np.uint8)
    s = np.array([sudoku.solve(list(easy))] * 8, np.uint8)
    inputs, targets, masked, t = make_batch(p, s, 0.0, np.random.default_rng(1), closure_frac=1.0)
    assert masked.any(1).all() and torch.equal(inputs[~masked], targets[~masked])
    assert (masked.sum(1).numpy() <= (p == 0).sum(1)).all()


def test_hard_flags_grade_by_blanks_left():
    from tabes.train import hard_flags

    p, s = sudoku.generate_puzzles(20, seed=5)
    left = np.array([sum(v == 0 for v in sudoku.singles_fixpoint(list(map(int, q)))) for q in p])
    for k in (1, 30, 45):
        assert (hard_flags(p, s, k) == (left >= k)).all()
    assert (hard_flags(p, s, 1) == sudoku.needs_search_flags(p)).all()


def test_config_rejects_bad_closure_settings(tmp_path):
    with pytest.raises(ValueError, match="closure_frac must be in \\[0, 1\\], got 1.5"):
        TrainConfig(out=str(tmp_path), closure_frac=1.5)
    with pytest.raises(ValueError, match="hard_min_blanks must be in \\[1, 81\\], got 0"):
        TrainConfig(out=str(tmp_path), hard_min_blanks=0)


def test_ema_is_the_moving_average_and_resumes(tmp_path):
    cfg = _tiny(tmp_path / "run", max_steps=3, batch_size=4, eval_every=100, pool_size=8, ema=0.5, warmup=0)
    start = MDM(MDMConfig(d_model=16, n_layers=1, n_heads=2))
    start.save_pretrained(tmp_path / "run")
    before = {k: v.clone() for k, v in start.state_dict().items()}
    train(cfg, resume=True, progress=False)
    ema = MDM.from_pretrained(tmp_path / "run" / "ema").state_dict()
    last = MDM.from_pretrained(tmp_path / "run").state_dict()
    name = "blocks.0.qkv.weight"
    assert not torch.equal(ema[name], last[name]) and not torch.equal(ema[name], before[name])
    # decay 0.5 over 3 steps: the start weighs 1/8, so the average sits between start and end
    gap = (last[name] - before[name]).abs().sum()
    assert 0 < (ema[name] - last[name]).abs().sum() < gap
    train(TrainConfig(**{**cfg.__dict__, "max_steps": 4}), resume=True, progress=False)  # resumes from the saved average
    again = MDM.from_pretrained(tmp_path / "run" / "ema").state_dict()
    assert not torch.equal(again[name], ema[name])
    with pytest.raises(ValueError, match="ema must be in \\[0, 1\\), got 1.0"):
        TrainConfig(out=str(tmp_path), ema=1.0)


def test_trainer_adds_hardened_puzzles_to_the_pool(tmp_path):
    cfg = _tiny(tmp_path / "run", max_steps=1, batch_size=4, eval_every=100, pool_size=4, harden=3, harden_blanks=40)
    train(cfg, progress=False)
    files = sorted((tmp_path / "run" / "pool").glob("harden_*.npz"))
    assert len(files) == 1
    from tabes.train import load_pool_file

    p, s, hard = load_pool_file(files[0])
    assert p.shape == (3, 81) and hard.shape == (3,)
    assert all(sudoku.verify(list(map(int, b)), list(map(int, a))) for a, b in zip(p, s))
    train(TrainConfig(**{**cfg.__dict__, "max_steps": 2}), resume=True, progress=False)  # enough already: none made
    assert sorted((tmp_path / "run" / "pool").glob("harden_*.npz")) == files
    with pytest.raises(ValueError, match="harden must be >= 0, got -1"):
        TrainConfig(out=str(tmp_path), harden=-1)
