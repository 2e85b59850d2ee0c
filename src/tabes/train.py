"""The masked-diffusion objective and a resumable trainer for the Sudoku MDM.

Objective (MDLM / LLaDA): draw t ~ U(0, 1), mask each maskable cell with probability t, and
minimise the cross-entropy of the true tokens at the masked cells. ``weighting="none"``
averages over masked cells; ``weighting="1/t"`` is the ELBO weighting of MDLM/LLaDA.

Data are generated, never read from a puzzle file: random complete grids, minimal
unique-solution puzzles cut from them (``tabes.tasks.sudoku.make_puzzle``; 22-26 givens,
including hard ones), and random Sudoku symmetries applied to every sample. A sample is
either a *puzzle* sample (givens stay visible, each other cell is masked with probability t:
the states a solver meets while decoding) or, with probability ``p_full_grid``, a *grid*
sample (any cell may be masked: plain generative MDM training).

The trainer saves ``model.safetensors`` + ``config.json`` (loadable by :func:`tabes.load`) and
``train_state.safetensors`` + ``train_state.json`` (optimizer, step, random states), so a run
resumes exactly. It logs to ``train_log.jsonl`` and evaluates on held-out generated puzzles.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tabes.models.mdm import MDM, MDMConfig
from tabes.tasks import sudoku


@dataclass
class TrainConfig:
    """Settings of a Sudoku training run (all stored in ``train_state.json``)."""

    out: str  # run folder: checkpoints, logs, generated puzzle pool
    minutes: float = 60.0  # wall-clock budget of this invocation
    max_steps: int = 20000  # schedule length; the run stops here even with time left
    batch_size: int = 128
    lr: float = 1e-3
    warmup: int = 200  # linear warm-up steps (also after a resume without optimizer state)
    decay_frac: float = 0.2  # the last decay_frac * max_steps steps decay the lr linearly to 5%
    weight_decay: float = 0.01
    weighting: str = "none"  # "none" or "1/t"
    p_full_grid: float = 0.2  # fraction of samples that mask a full grid instead of a puzzle
    pool_size: int = 2000  # generated puzzles to hold; more are generated if the pool is smaller
    pool_dirs: list[str] = field(default_factory=list)  # extra folders of pool *.npz files
    eval_every: int = 500
    eval_puzzles: int = 128
    log_every: int = 50
    seed: int = 0
    model: dict = field(default_factory=dict)  # MDMConfig overrides for a new run

    def __post_init__(self) -> None:
        for name in ("minutes", "max_steps", "batch_size", "lr", "eval_every", "log_every", "pool_size"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.weighting not in ("none", "1/t"):
            raise ValueError(f"weighting must be 'none' or '1/t', got {self.weighting!r}")
        if not 0 <= self.p_full_grid <= 1:
            raise ValueError(f"p_full_grid must be in [0, 1], got {self.p_full_grid}")


# --------------------------------------------------------------------------- data


def load_pool(dirs: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate ``puzzles``/``solutions`` arrays from every ``*.npz`` in ``dirs``."""
    ps, ss = [], []
    for d in dirs:
        for f in sorted(Path(d).glob("*.npz")):
            with np.load(f) as z:
                ps.append(z["puzzles"])
                ss.append(z["solutions"])
    if not ps:
        return np.zeros((0, 81), np.uint8), np.zeros((0, 81), np.uint8)
    return np.concatenate(ps), np.concatenate(ss)


def make_batch(
    puzzles: np.ndarray, solutions: np.ndarray, p_full_grid: float, rng: np.random.Generator
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Masked inputs from a batch of (puzzle, solution) pairs.

    Returns:
        inputs (B, 81) long ids with masks, targets (B, 81) long ids, masked (B, 81) bool
        (the cells the loss is taken on), t (B,) float mask rate.
    """
    p, s = sudoku.random_symmetry(puzzles, solutions, rng)
    n = p.shape[0]
    t = rng.uniform(0.0, 1.0, size=n)
    maskable = p == 0
    maskable[rng.random(n) < p_full_grid] = True
    masked = maskable & (rng.random((n, 81)) < t[:, None])
    none = ~masked.any(1)  # at least one masked cell per sample
    if none.any():
        pick = np.array([rng.choice(np.flatnonzero(m)) for m in maskable[none]])
        masked[np.flatnonzero(none), pick] = True
    targets = torch.from_numpy(s.astype(np.int64) - 1)
    inputs = targets.masked_fill(torch.from_numpy(masked), sudoku.MASK_ID)
    return inputs, targets, torch.from_numpy(masked), torch.from_numpy(t).float()


def mdm_loss(model: MDM, inputs: Tensor, targets: Tensor, masked: Tensor, t: Tensor, weighting: str = "none") -> Tensor:
    """Masked cross-entropy; (B, L) inputs/targets/masked and (B,) t -> scalar."""
    logits = model(inputs)  # (B, L, V)
    ce = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, L)
    if weighting == "1/t":
        w = masked.float() / t.clamp_min(1e-3)[:, None]
        return (ce * w).sum() / masked.shape[0] / masked.shape[1]
    return (ce * masked).sum() / masked.sum().clamp_min(1)


# --------------------------------------------------------------------------- evaluation


def evaluate(model: MDM, puzzles: np.ndarray, solutions: np.ndarray, batch_size: int = 128) -> float:
    """Fraction of puzzles solved exactly by greedy confidence decoding, one cell per step."""
    from tabes.generate import generate

    solved = 0
    was_training = model.training
    model.eval()
    for lo in range(0, len(puzzles), batch_size):
        ids = torch.tensor([sudoku.to_ids(list(map(int, p))) for p in puzzles[lo : lo + batch_size]])
        out = generate(model, ids, sampler="confidence", steps=81)
        target = torch.from_numpy(solutions[lo : lo + batch_size].astype(np.int64) - 1)
        solved += int((out.sequences == target).all(1).sum())
    model.train(was_training)
    return solved / max(len(puzzles), 1)


# --------------------------------------------------------------------------- trainer


def _lr(cfg: TrainConfig, step: int, warm_from: int) -> float:
    warm = min(1.0, (step - warm_from + 1) / cfg.warmup) if cfg.warmup else 1.0
    decay_start = cfg.max_steps * (1 - cfg.decay_frac)
    decay = 1.0 if step < decay_start else max(0.05, 1 - 0.95 * (step - decay_start) / max(1, cfg.max_steps - decay_start))
    return cfg.lr * warm * decay


def _save_state(out: Path, model: MDM, opt: torch.optim.Optimizer, cfg: TrainConfig, state: dict, rng: np.random.Generator) -> None:
    from safetensors.torch import save_file

    model.save_pretrained(out)
    tensors = {}
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            tensors[f"{i}.{k}"] = v.detach().reshape(-1) if v.dim() == 0 else v.detach().contiguous()
    tensors["torch_rng"] = torch.get_rng_state()
    save_file(tensors, str(out / "train_state.safetensors"))
    meta = {**state, "config": asdict(cfg), "numpy_rng": rng.bit_generator.state}
    tmp = out / "train_state.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1, default=int))
    tmp.replace(out / "train_state.json")


def train(cfg: TrainConfig, *, resume: bool = False, progress: bool = True) -> dict:
    """Train (or resume) a Sudoku MDM in ``cfg.out``; returns the final state dict.

    On resume, the model, optimizer moments, step, data random state and log continue from
    the folder. A folder with a model but no optimizer state (e.g. the shipped checkpoint)
    resumes the weights with fresh optimizer moments and a new warm-up.
    """
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    state = {"step": 0, "warm_from": 0, "seconds": 0.0, "samples": 0}
    if resume:
        if not (out / "model.safetensors").is_file():
            raise FileNotFoundError(f"--resume: no model.safetensors in {out}")
        model = MDM.from_pretrained(out)
    else:
        known = {f.name for f in fields(MDMConfig)}
        bad = set(cfg.model) - known
        if bad:
            raise ValueError(f"unknown model options {sorted(bad)}; known: {sorted(known)}")
        model = MDM(MDMConfig(**cfg.model))
    model.train()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and "tok" not in name else no_decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )
    if resume and (out / "train_state.json").is_file():
        meta = json.loads((out / "train_state.json").read_text())
        state = {k: meta[k] for k in state if k in meta}
        if "numpy_rng" in meta:
            rng.bit_generator.state = meta["numpy_rng"]
        st_file = out / "train_state.safetensors"
        if st_file.is_file():
            from safetensors.torch import load_file

            tensors = load_file(str(st_file))
            torch.set_rng_state(tensors.pop("torch_rng"))
            sd = opt.state_dict()
            for key, v in tensors.items():
                i, k = key.split(".", 1)
                sd["state"].setdefault(int(i), {})[k] = v.reshape(()) if k == "step" else v
            opt.load_state_dict(sd)
        else:
            state["warm_from"] = state["step"]
    elif resume:
        state["warm_from"] = 0

    # data: pool of generated puzzles (reused across runs), held-out evaluation puzzles
    pool_dir = out / "pool"
    pool_dir.mkdir(exist_ok=True)
    dirs = [pool_dir, *map(Path, cfg.pool_dirs)]
    puzzles, solutions = load_pool(dirs)
    if len(puzzles) < cfg.pool_size:
        need = cfg.pool_size - len(puzzles)
        p, s = sudoku.generate_puzzles(need, seed=cfg.seed * 7919 + len(puzzles), progress=progress)
        np.savez_compressed(pool_dir / f"gen_{cfg.seed}_{len(puzzles)}.npz", puzzles=p, solutions=s)
        puzzles, solutions = load_pool(dirs)
    eval_p, eval_s = sudoku.generate_puzzles(cfg.eval_puzzles, seed=10_000_019 + cfg.seed)

    log_path = out / "train_log.jsonl"
    if resume and log_path.is_file():  # drop records written after the checkpoint we resume from
        kept = [line for line in log_path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= state["step"]]
        log_path.write_text("".join(line + "\n" for line in kept))
    log = log_path.open("a")
    deadline = time.perf_counter() + cfg.minutes * 60
    t0 = time.perf_counter()
    seconds0 = state["seconds"]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.max_steps, initial=state["step"], desc="training", unit="step")
    running = None
    stop = {"signal": None}

    def request_stop(signum, frame):  # finish the current step, save, and return
        stop["signal"] = signum

    previous = {}
    if threading.current_thread() is threading.main_thread():  # signal handlers only work there
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, request_stop)
    try:
        while state["step"] < cfg.max_steps and time.perf_counter() < deadline and stop["signal"] is None:
            step = state["step"]
            lr = _lr(cfg, step, state["warm_from"])
            for g in opt.param_groups:
                g["lr"] = lr
            idx = rng.integers(0, len(puzzles), size=cfg.batch_size)
            inputs, targets, masked, t = make_batch(puzzles[idx], solutions[idx], cfg.p_full_grid, rng)
            loss = mdm_loss(model, inputs, targets, masked, t, cfg.weighting)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            state["step"] = step + 1
            state["samples"] += cfg.batch_size
            lv = loss.item()
            running = lv if running is None else 0.95 * running + 0.05 * lv
            state["seconds"] = seconds0 + time.perf_counter() - t0
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{running:.4f}", lr=f"{lr:.2e}")
            if state["step"] % cfg.log_every == 0:
                log.write(
                    json.dumps({"step": state["step"], "loss": round(running, 5), "lr": lr, "seconds": round(state["seconds"], 1)}) + "\n"
                )
                log.flush()
            if state["step"] % cfg.eval_every == 0:
                acc = evaluate(model, eval_p, eval_s)
                state["eval_solved"] = acc
                log.write(
                    json.dumps(
                        {"step": state["step"], "eval_solved": acc, "eval_puzzles": len(eval_p), "seconds": round(state["seconds"], 1)}
                    )
                    + "\n"
                )
                log.flush()
                _save_state(out, model, opt, cfg, state, rng)
                new_p, new_s = load_pool(dirs)  # pick up puzzles generated meanwhile
                if len(new_p) > len(puzzles):
                    puzzles, solutions = new_p, new_s
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if bar is not None:
            bar.close()
        _save_state(out, model, opt, cfg, state, rng)
        log.close()
    return state
