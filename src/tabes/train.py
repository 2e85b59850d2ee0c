"""The masked-diffusion objective and a resumable trainer for the Sudoku MDM.

Objective (MDLM / LLaDA): draw t ~ U(0, 1), mask each maskable cell with probability t, and
minimise the cross-entropy of the true tokens at the masked cells. ``weighting="none"``
averages over masked cells; ``weighting="1/t"`` is the ELBO weighting of MDLM/LLaDA.

Data are generated, never read from a puzzle file: random complete grids, minimal
unique-solution puzzles cut from them (``tabes.tasks.sudoku.make_puzzle``; 22-26 givens,
including hard ones), and random Sudoku symmetries applied to every sample. A sample is
either a *puzzle* sample (givens stay visible, each other cell is masked with probability t)
or, with probability ``p_full_grid``, a *grid*
sample (any cell may be masked: plain generative MDM training). With probability
``closure_frac`` a puzzle sample is a *stuck* sample instead: the cells still blank after
naked and hidden singles have filled everything they can (a uniform mask almost never leaves
such a state). A share ``hard_frac`` of the samples comes from puzzles where singles leave
at least ``hard_min_blanks`` blanks, the rest from the whole pool.

The trainer saves ``model.safetensors`` + ``config.json`` (loadable by :func:`tabes.load`) and
``train_state.safetensors`` + ``train_state.json`` (optimizer, step, random states), so a run
resumes exactly. It logs to ``train_log.jsonl`` and evaluates on held-out generated puzzles.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tabes.files import atomic_path, atomic_write_text
from tabes.models.mdm import MDM, MDMConfig
from tabes.tasks import sudoku

PRECISIONS = ("auto", "bf16", "fp32")
TASKS = ("sudoku", "text")


@dataclass
class TrainConfig:
    """Settings of a training run (all stored in ``train_state.json``).

    ``task`` picks the task object (:func:`make_task`). The pool fields (``p_full_grid``,
    ``pool_size``, ``pool_dirs``, ``hard_frac``, ``workers``) and ``eval_file``/``eval_per_band``
    are Sudoku's; the text task ignores them. ``result_frac`` is the text task's;
    Sudoku ignores it. ``eval_puzzles`` counts held-out items of either.
    """

    out: str  # run folder: checkpoints, logs, generated puzzle pool
    task: str = "sudoku"  # "sudoku" (our MDM on generated puzzles) or "text" (a ModernBERT on word problems)
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
    eval_file: str | None = None  # optional CSV of real puzzles (puzzle, solution, source) also scored at each evaluation
    eval_per_band: int = 50  # puzzles per source band of eval_file (the first ones in file order)
    log_every: int = 50
    seed: int = 0
    model: dict = field(default_factory=dict)  # MDMConfig overrides for a new run
    # "bf16": bfloat16 autocast with float32 master weights; "fp32": plain float32; "auto": bf16 only where
    # this machine runs it faster than float32 (tabes.hardware.choose_precision)
    precision: str = "auto"
    # torch.compile the training forward and loss (falls back to eager if it fails); None: only where it
    # pays on this machine (tabes.hardware.choose_compile)
    compile: bool | None = None
    hard_frac: float = 0.5  # fraction of puzzle samples drawn from the pool's hard puzzles (see hard_min_blanks)
    hard_min_blanks: int = 45  # a puzzle is hard when singles leave at least this many blanks (1: singles do not solve it)
    closure_frac: float = 0.5  # fraction of puzzle samples that are stuck states (see make_batch)
    workers: int = 0  # processes generating the pool (0: one per core)
    ema: float = 0.0  # decay of an exponential moving average of the weights, saved in out/ema (0: none)
    harden: int = 0  # hill-climbed hard puzzles to hold besides pool_size (tabes.tasks.sudoku.harden)
    harden_blanks: int = 55  # the climb's target: blanks that singles leave
    result_frac: float = 0.8  # text: share of chain samples (one result and every later copy of it hidden; see text_demo)

    def __post_init__(self) -> None:
        for name in ("minutes", "max_steps", "batch_size", "lr", "eval_every", "log_every", "pool_size"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.weighting not in ("none", "1/t"):
            raise ValueError(f"weighting must be 'none' or '1/t', got {self.weighting!r}")
        if not 0 <= self.p_full_grid <= 1:
            raise ValueError(f"p_full_grid must be in [0, 1], got {self.p_full_grid}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not 0 <= self.hard_frac <= 1:
            raise ValueError(f"hard_frac must be in [0, 1], got {self.hard_frac}")
        if not 0 <= self.closure_frac <= 1:
            raise ValueError(f"closure_frac must be in [0, 1], got {self.closure_frac}")
        if not 1 <= self.hard_min_blanks <= 81:
            raise ValueError(f"hard_min_blanks must be in [1, 81], got {self.hard_min_blanks}")
        if not 0 <= self.result_frac <= 1:
            raise ValueError(f"result_frac must be in [0, 1], got {self.result_frac}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema must be in [0, 1), got {self.ema}")
        if self.harden < 0:
            raise ValueError(f"harden must be >= 0, got {self.harden}")
        if not 1 <= self.harden_blanks <= 81:
            raise ValueError(f"harden_blanks must be in [1, 81], got {self.harden_blanks}")


# --------------------------------------------------------------------------- data


def load_pool_file(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(puzzles, solutions, hard)`` of one pool file, as :func:`load_pool` returns them."""
    with np.load(path) as z:
        p, s = z["puzzles"], z["solutions"]
        return p, s, z["hard"] if "hard" in z.files else sudoku.needs_search_flags(p)


def load_pool(dirs: list[Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate ``puzzles``/``solutions`` arrays from every ``*.npz`` in ``dirs``.

    Returns ``(puzzles, solutions, hard)``: (N, 81) uint8 arrays and an (N,) bool array, True
    where singles alone do not solve the puzzle (:func:`tabes.tasks.sudoku.needs_search`; read
    from the file's ``hard`` array, or computed for files written without one).
    """
    parts = [load_pool_file(f) for d in dirs for f in sorted(Path(d).glob("*.npz"))]
    if not parts:
        return np.zeros((0, 81), np.uint8), np.zeros((0, 81), np.uint8), np.zeros(0, bool)
    return tuple(np.concatenate(a) for a in zip(*parts))


def save_pool(path: Path, puzzles: np.ndarray, solutions: np.ndarray) -> None:
    """Write a pool file (``puzzles``, ``solutions``, ``hard``) atomically."""
    hard = sudoku.needs_search_flags(puzzles)
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, puzzles=puzzles, solutions=solutions, hard=hard)


def _stuck_masks(puzzles: np.ndarray, solutions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, 81) bool masks of stuck states: closed under singles, with a random share of the hard cells shown.

    The givens are closed under naked and hidden singles (:func:`tabes.tasks.sudoku.singles_closure`);
    each cell still blank is then shown with probability r ~ U(0, 0.3) (the hard placements
    a decoder has already made) and the board is closed again. When that finishes the board,
    the first stuck state is used. A puzzle that singles solve has no stuck state: its row is
    all False.
    """
    n = len(puzzles)
    stuck = sudoku.singles_closure(puzzles, solutions) == 0
    shown = stuck & (rng.random((n, 81)) < rng.uniform(0.0, 0.3, size=(n, 1)))
    again = sudoku.singles_closure(np.where(stuck & ~shown, 0, solutions), solutions) == 0
    return np.where(again.any(1, keepdims=True), again, stuck)


def hard_flags(puzzles: np.ndarray, solutions: np.ndarray, min_blanks: int = 1) -> np.ndarray:
    """(N,) bool: True where naked and hidden singles leave at least ``min_blanks`` blanks.

    ``min_blanks=1`` is :func:`tabes.tasks.sudoku.needs_search`; the hardest public lists
    leave a median of 55-59 blanks, generated minimal puzzles that need search about 42.
    """
    return (sudoku.singles_closure(puzzles, solutions) == 0).sum(1) >= min_blanks


def sample_indices(hard: np.ndarray, n: int, hard_frac: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` pool indices: a Binomial(n, hard_frac) share from the hard puzzles, the rest uniform."""
    hard_idx = np.flatnonzero(hard)
    n_hard = int(rng.binomial(n, hard_frac)) if len(hard_idx) else 0
    return np.concatenate([rng.choice(hard_idx, n_hard), rng.integers(0, len(hard), n - n_hard)])


def make_batch(
    puzzles: np.ndarray, solutions: np.ndarray, p_full_grid: float, rng: np.random.Generator, closure_frac: float = 0.0
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Masked inputs from a batch of (puzzle, solution) pairs.

    With probability ``closure_frac`` a puzzle sample is instead a *stuck* sample
    (:func:`_stuck_masks`): the cells a decoder that places every easy cell first still has to
    fill, where its next choice decides the puzzle. A random mask almost never looks like that:
    on generated puzzles, singles finish every state with t < 0.7.

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
    close = np.flatnonzero((rng.random(n) < closure_frac) & ~maskable.all(1))
    if len(close):
        stuck = _stuck_masks(p[close], s[close], rng)
        rows = close[stuck.any(1)]  # puzzles that singles solve keep their uniform mask
        masked[rows] = stuck[stuck.any(1)]
        t[rows] = masked[rows].sum(1) / maskable[rows].sum(1)  # the share of blanks masked, as for the others
    none = ~masked.any(1)  # at least one masked cell per sample
    if none.any():
        pick = np.array([rng.choice(np.flatnonzero(m)) for m in maskable[none]])
        masked[np.flatnonzero(none), pick] = True
    targets = torch.from_numpy(s.astype(np.int64) - 1)
    inputs = targets.masked_fill(torch.from_numpy(masked), sudoku.MASK_ID)
    return inputs, targets, torch.from_numpy(masked), torch.from_numpy(t).float()


def mdm_loss(
    model: torch.nn.Module,
    inputs: Tensor,
    targets: Tensor,
    masked: Tensor,
    t: Tensor,
    weighting: str = "none",
    precision: str = "fp32",
    attention_mask: Tensor | None = None,
) -> Tensor:
    """Masked cross-entropy; (B, L) inputs/targets/masked and (B,) t -> scalar.

    ``model(inputs)`` (or ``model(inputs, attention_mask)`` when a (B, L) bool mask is given)
    returns (B, L, V) logits. ``precision="bf16"`` runs the model under bfloat16 autocast
    (parameters stay float32); the cross-entropy is always taken in float32.
    """
    with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        logits = model(inputs) if attention_mask is None else model(inputs, attention_mask)  # (B, L, V)
    ce = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")  # (B, L)
    if weighting == "1/t":
        w = masked.float() / t.clamp_min(1e-3)[:, None]
        return (ce * w).sum() / masked.shape[0] / masked.shape[1]
    return (ce * masked).sum() / masked.sum().clamp_min(1)


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, *, fused: bool = True) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on embeddings, norms, biases).

    ``fused``: PyTorch's fused AdamW kernel where the parameters' device has one (CPU and CUDA):
    the same update in one kernel per parameter group (about 3% of a CPU training step).
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and "tok" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = fused and all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in model.parameters())
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), **({"fused": True} if fused else {}))


def resolve_speed(precision: str, compile: bool | None, device: str | torch.device = "cpu") -> tuple[str, bool, str]:
    """The precision and compilation a training run uses: ``(precision, compile, reason)``.

    ``precision="auto"`` and ``compile=None`` are decided by this machine
    (:func:`tabes.hardware.choose_precision`, :func:`tabes.hardware.choose_compile`); explicit
    values are kept. ``reason`` is one line for the log.
    """
    from tabes.hardware import choose_compile, choose_precision, cpu_info

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    why = []
    if precision == "auto":
        precision, reason = choose_precision(device)
        why.append(f"precision {precision} (auto: {reason})")
    else:
        why.append(f"precision {precision} (as asked)")
    if compile is None:
        compile, reason = choose_compile(device, precision)
        why.append(f"torch.compile {'on' if compile else 'off'} (auto: {reason})")
    else:
        why.append(f"torch.compile {'on' if compile else 'off'} (as asked)")
    if torch.device(device).type == "cpu":
        why.append(f"CPU {cpu_info().describe()}")
    return precision, compile, "; ".join(why)


class TrainStep:
    """One optimisation step: loss (optionally compiled, optionally bf16), backward, clip, AdamW.

    Called with one batch, ``(inputs, targets, masked, t[, attention_mask])`` (see :func:`mdm_loss`).

    ``compile=True`` wraps the forward and loss in ``torch.compile``; if compilation fails
    (no compiler on the machine, an unsupported PyTorch) the step warns once and runs eagerly.
    Used by :func:`train` and by ``tabes bench train``, so both measure the same step.
    """

    def __init__(
        self, model: torch.nn.Module, opt: torch.optim.Optimizer, *, precision: str, compile: bool, weighting: str = "none"
    ) -> None:
        self.model, self.opt, self.precision, self.weighting = model, opt, precision, weighting
        self._loss = torch.compile(self._eager_loss) if compile else self._eager_loss

    def _eager_loss(self, inputs: Tensor, targets: Tensor, masked: Tensor, t: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return mdm_loss(self.model, inputs, targets, masked, t, self.weighting, self.precision, attention_mask)

    def __call__(self, *batch: Tensor) -> float:
        try:
            loss = self._loss(*batch)
        except Exception as err:  # a compiler problem must not end a training run
            if self._loss is self._eager_loss:
                raise
            import warnings

            warnings.warn(f"torch.compile failed ({type(err).__name__}: {err}); training eagerly", stacklevel=2)
            self._loss = self._eager_loss
            loss = self._loss(*batch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        return loss.item()


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


def eval_bands(path: str, per_band: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The first ``per_band`` puzzles of each source band of a CSV with solutions, as arrays."""
    from collections import defaultdict

    groups: dict[str, list] = defaultdict(list)
    for r in sudoku.read_csv(path):
        name = sudoku.band(r.source)
        if r.solution is not None and len(groups[name]) < per_band:
            groups[name].append((r.cells, r.solution))
    return {k: (np.array([c for c, _ in v], np.uint8), np.array([s for _, s in v], np.uint8)) for k, v in sorted(groups.items())}


# --------------------------------------------------------------------------- tasks


class SudokuTraining:
    """The Sudoku task of the trainer: our MDM, batches from a pool of generated puzzles,
    greedy solve rates on held-out generated puzzles (and per band of ``eval_file``)."""

    def __init__(self, cfg: TrainConfig, out: Path, progress: bool) -> None:
        self.cfg, self.out, self.progress = cfg, out, progress

    def new_model(self) -> MDM:
        known = {f.name for f in fields(MDMConfig)}
        bad = set(self.cfg.model) - known
        if bad:
            raise ValueError(f"unknown model options {sorted(bad)}; known: {sorted(known)}")
        return MDM(MDMConfig(**self.cfg.model))

    def load_model(self, path: Path | None = None) -> MDM:
        return MDM.from_pretrained(path or self.out)

    def save_model(self, model: MDM, path: Path | None = None) -> None:
        model.save_pretrained(path or self.out)

    def loss_module(self, model: MDM) -> MDM:
        return model

    def prepare(self) -> None:
        """Load (and top up) the pool of generated puzzles; draw the held-out evaluation puzzles."""
        cfg = self.cfg
        pool_dir = self.out / "pool"
        pool_dir.mkdir(exist_ok=True)
        self.dirs = [pool_dir, *map(Path, cfg.pool_dirs)]
        self._set_pool(*load_pool(self.dirs))
        workers = cfg.workers or os.cpu_count() or 1
        if len(self.puzzles) < cfg.pool_size:
            need = cfg.pool_size - len(self.puzzles)
            p, s = sudoku.generate_pool(need, seed=cfg.seed * 7919 + len(self.puzzles), workers=workers, progress=self.progress)
            save_pool(pool_dir / f"gen_{cfg.seed}_{len(self.puzzles)}.npz", p, s)
            self._set_pool(*load_pool(self.dirs))
        have = sum(len(load_pool_file(f)[0]) for f in pool_dir.glob("harden_*.npz"))
        if have < cfg.harden:  # in chunks, so a killed run keeps what it made
            while have < cfg.harden:
                n = min(cfg.harden - have, 50 * sudoku.HARD_CHUNK * workers)
                p, s = sudoku.generate_hard_pool(
                    n, seed=cfg.seed * 7919 + 1_000_003 + have, target_blanks=cfg.harden_blanks, workers=workers, progress=self.progress
                )
                save_pool(pool_dir / f"harden_{cfg.seed}_{have}.npz", p, s)
                have += n
            self._set_pool(*load_pool(self.dirs))
        self.eval_p, self.eval_s = sudoku.generate_puzzles(cfg.eval_puzzles, seed=10_000_019 + cfg.seed)
        self.bands = eval_bands(cfg.eval_file, cfg.eval_per_band) if cfg.eval_file else {}

    def _set_pool(self, puzzles: np.ndarray, solutions: np.ndarray, needs_search: np.ndarray) -> None:
        self.puzzles, self.solutions = puzzles, solutions
        min_blanks = self.cfg.hard_min_blanks
        self.hard = needs_search if min_blanks == 1 else hard_flags(puzzles, solutions, min_blanks)

    def batch(self, rng: np.random.Generator) -> tuple[Tensor, ...]:
        idx = sample_indices(self.hard, self.cfg.batch_size, self.cfg.hard_frac, rng)
        return make_batch(self.puzzles[idx], self.solutions[idx], self.cfg.p_full_grid, rng, self.cfg.closure_frac)

    def evaluate(self, model: MDM) -> dict:
        rec = {"eval_solved": evaluate(model, self.eval_p, self.eval_s), "eval_puzzles": len(self.eval_p)}
        if self.bands:
            rec["bands"] = {name: round(evaluate(model, p, s), 4) for name, (p, s) in self.bands.items()}
            rec["band_puzzles"] = {name: len(p) for name, (p, _) in self.bands.items()}
        new = load_pool(self.dirs)  # pick up puzzles generated meanwhile
        if len(new[0]) > len(self.puzzles):
            self._set_pool(*new)
        return rec


def make_task(cfg: TrainConfig, out: Path, progress: bool):
    """The task object behind ``cfg.task`` (the trainer's only task-specific part)."""
    if cfg.task == "text":
        from tabes.tasks.text_demo import TextTraining

        return TextTraining(cfg, out, progress)
    return SudokuTraining(cfg, out, progress)


# --------------------------------------------------------------------------- trainer


def _lr(cfg: TrainConfig, step: int, warm_from: int) -> float:
    warm = min(1.0, (step - warm_from + 1) / cfg.warmup) if cfg.warmup else 1.0
    decay_start = cfg.max_steps * (1 - cfg.decay_frac)
    decay = 1.0 if step < decay_start else max(0.05, 1 - 0.95 * (step - decay_start) / max(1, cfg.max_steps - decay_start))
    return cfg.lr * warm * decay


def _save_state(
    out: Path, task, model, opt: torch.optim.Optimizer, cfg: TrainConfig, state: dict, rng: np.random.Generator, ema=None
) -> None:
    from safetensors.torch import save_file

    task.save_model(model)
    if ema is not None:
        task.save_model(ema, out / "ema")
    tensors = {}
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            tensors[f"{i}.{k}"] = v.detach().reshape(-1) if v.dim() == 0 else v.detach().contiguous()
    tensors["torch_rng"] = torch.get_rng_state()
    with atomic_path(out / "train_state.safetensors") as tmp:
        save_file(tensors, str(tmp))
    meta = {**state, "config": asdict(cfg), "numpy_rng": rng.bit_generator.state}
    atomic_write_text(out / "train_state.json", json.dumps(meta, indent=1, default=int))


def train(cfg: TrainConfig, *, resume: bool = False, progress: bool = True) -> dict:
    """Train (or resume) a model for ``cfg.task`` in ``cfg.out``; returns the final state dict.

    On resume, the model, optimizer moments, step, data random state and log continue from
    the folder. A folder with a model but no optimizer state (e.g. a shipped checkpoint)
    resumes the weights with fresh optimizer moments and a new warm-up.
    """
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    state = {"step": 0, "warm_from": 0, "seconds": 0.0, "samples": 0}
    task = make_task(cfg, out, progress)
    if resume:
        if not (out / "model.safetensors").is_file():
            raise FileNotFoundError(f"--resume: no model.safetensors in {out}")
        model = task.load_model()
    else:
        model = task.new_model()
    model.train()
    net = task.loss_module(model)
    opt = make_optimizer(net, cfg.lr, cfg.weight_decay)
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

    task.prepare()
    ema = None
    if cfg.ema:  # the average starts from the weights trained so far (or the folder's saved average)
        import copy

        ema = task.load_model(out / "ema") if resume and (out / "ema" / "model.safetensors").is_file() else copy.deepcopy(model)
        ema.eval().requires_grad_(False)
        ema_params, params = list(ema.parameters()), list(model.parameters())

    device = next(net.parameters()).device
    precision, compile, why = resolve_speed(cfg.precision, cfg.compile, device)
    print(f"tabes train: {why}", file=sys.stderr)
    state["speed"] = {"precision": precision, "compile": compile, "why": why}
    train_step = TrainStep(net, opt, precision=precision, compile=compile, weighting=cfg.weighting)
    log_path = out / "train_log.jsonl"
    if resume and log_path.is_file():  # drop records written after the checkpoint we resume from
        kept = [line for line in log_path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= state["step"]]
        atomic_write_text(log_path, "".join(line + "\n" for line in kept))
    log = log_path.open("a")
    deadline = time.perf_counter() + cfg.minutes * 60
    t0 = time.perf_counter()
    seconds0 = state["seconds"]
    bar = None
    if progress:
        from tabes.progress import progress_bar

        bar = progress_bar(cfg.max_steps, "training", "step", initial=state["step"])
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
            lv = train_step(*task.batch(rng))
            if ema is not None:
                with torch.no_grad():
                    torch._foreach_lerp_(ema_params, params, 1.0 - cfg.ema)
            state["step"] = step + 1
            state["samples"] += cfg.batch_size
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
                rec = task.evaluate(model)
                state.update({k: v for k, v in rec.items() if k.startswith("eval_")})
                rec = {"step": state["step"], **rec, "seconds": round(state["seconds"], 1)}
                log.write(json.dumps(rec) + "\n")
                log.flush()
                _save_state(out, task, model, opt, cfg, state, rng, ema)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if bar is not None:
            bar.close()
        _save_state(out, task, model, opt, cfg, state, rng, ema)
        log.close()
    return state
