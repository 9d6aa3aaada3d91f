"""Training a sparse autoencoder on a stored site with SAELens's trainer and SAE classes.

`train_sae(store, config, out)` streams float32 batches from an `ActivationStore`
(``store.iter_batches``: memory stays bounded whatever the corpus size) into SAELens's
``SAETrainer`` (its Adam optimiser, learning-rate and sparsity-coefficient schedules,
dead-latent tracking and each architecture's training step: TopK with the AuxK loss,
standard ReLU+L1, BatchTopK, JumpReLU). This module drives the trainer's public seams
(``step``, ``maybe_reset_sparsity``, ``set_final_sae_metadata``) in its own loop instead
of ``SAETrainer.fit`` for three things ``fit`` does not offer:

- checkpoints every ``checkpoint_every`` steps without pickles: the training SAE's weights
  and the optimiser moments in safetensors, counters and schedule states in JSON;
- resume: a killed run re-run with the same command loads the last checkpoint, skips the
  batches it had consumed (the stream is seeded) and ends with the same weights as an
  uninterrupted run;
- training curves: one row per ``log_every`` steps in ``rows.jsonl`` (loss terms, FVU, L0,
  learning rate, dead latents), and a tqdm progress bar.

By default (``sparse_decode``) the TopK SAE is `sparse_decode_topk_class`, a subclass of
SAELens's ``TopKTrainingSAE`` computing the same loss and gradients with the decoder reading
only the k active latents: on this CPU the stock step took 1.7-2.5x its matmul-bound time
(about half of it in passes over dense [batch, d_sae] tensors, the dense decoder's products
among them), the subclass 1.0-1.7x (median ~1.2-1.3x; ``bench/sae_train.py``). SAELens's own
``use_sparse_activations`` option cannot be used instead: its backward fails on CPU
(``NotImplementedError: aten::view`` for the SparseCPU backend, torch 2.13).

Two choices outside SAELens's defaults, both recorded in the config: activations are scaled
by one constant so that their mean norm is sqrt(d_model) (SAELens's
``expected_average_only_in``, estimated here on a seeded sample of training frames instead
of on the first training batches, and folded into the weights at the end), and the decoder
bias starts at the mean training activation. The run directory ``out`` ends with the SAE in
SAELens's format under ``out/sae/`` (``SAE.load_from_disk(out / "sae")`` loads it).
"""

from __future__ import annotations

import functools
import json
import math
import os
import queue
import shutil
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import torch

from whisperlens.errors import WhisperlensError
from whisperlens.runs import SUMMARY_FILE, RunDir

STUDY = "sae-train"
FORMAT_VERSION = 1  # rows: one per log_every steps (see _Window.row)
SAE_DIR, CHECKPOINT_DIR = "sae", "checkpoint"
WEIGHTS_FILE, OPTIM_FILE, STATE_FILE = (
    "sae_weights.safetensors",
    "optimizer.safetensors",
    "state.json",
)

Architecture = Literal["topk", "standard", "batchtopk", "jumprelu"]
ARCHITECTURES: tuple[str, ...] = get_args(Architecture)
LrSchedule = Literal["constant", "cosineannealing"]
Normalize = Literal["expected_average_only_in", "none"]


class TrainError(WhisperlensError, ValueError):
    """A training configuration or run that cannot proceed."""


@dataclass(frozen=True)
class TrainConfig:
    """How a SAE is trained (the CLI parses into this; every field is in ``config.json``)."""

    architecture: Architecture = "topk"  # topk | standard (ReLU+L1) | batchtopk | jumprelu
    expansion: int = 8  # d_sae = expansion * d_model, unless d_sae is given
    d_sae: int | None = None  # number of latents
    k: int = 32  # active latents per frame (topk), on average per batch (batchtopk)
    l1_coefficient: float = 5.0  # standard: weight of the L1 penalty (normalised activations)
    l1_warm_up_steps: int = 0  # standard: steps over which the L1 weight ramps up from 0
    l0_coefficient: float = 0.5  # jumprelu: weight of the L0 penalty
    l0_warm_up_steps: int = 0  # jumprelu: steps over which the L0 weight ramps up from 0
    jumprelu_init_threshold: float = 0.01  # jumprelu: initial threshold
    jumprelu_bandwidth: float = 0.05  # jumprelu: straight-through estimator bandwidth
    lr: float = 5e-4  # Adam learning rate
    lr_schedule: LrSchedule = "constant"  # main schedule between warm-up and decay
    lr_warm_up_steps: int = 0  # linear warm-up from lr / warm_up to lr
    lr_decay_steps: int | None = None  # final linear decay to 0; None: 20 % of the steps
    lr_end: float | None = None  # cosine: lr annealed to (and decay start); None: lr / 10
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    batch_size: int = 1024  # frames per step
    n_frames: int | None = None  # frames to train on; None: one epoch of the train split
    seed: int = 0  # SAE initialisation and data order
    checkpoint_every: int = 500  # steps between checkpoints (0: none); a multiple of log_every
    log_every: int = 50  # steps per row of training curves
    dead_feature_window: int = 200  # steps without firing after which a latent counts as dead
    feature_sampling_window: int = 1000  # steps per SAELens sparsity window
    normalize: Normalize = "expected_average_only_in"  # scale so mean norm is sqrt(d_model)
    n_norm_frames: int = 65_536  # training frames sampled for the scale and b_dec init
    buffer_frames: int = 262_144  # shuffle buffer of the activation stream
    sparse_decode: bool = True  # topk: decode only the k active latents (same loss, faster)
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise TrainError(f"unknown architecture {self.architecture!r}",
                             f"use one of {', '.join(ARCHITECTURES)}")  # fmt: skip
        positive = {"expansion": self.expansion, "k": self.k, "batch_size": self.batch_size,
                    "log_every": self.log_every, "n_norm_frames": self.n_norm_frames,
                    "buffer_frames": self.buffer_frames, "lr": self.lr,
                    "dead_feature_window": self.dead_feature_window,
                    "feature_sampling_window": self.feature_sampling_window}  # fmt: skip
        for name, value in positive.items():
            if not value > 0:
                raise TrainError(f"{name} must be > 0, got {value}")
        for name in ("d_sae", "n_frames"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise TrainError(f"{name} must be >= 1, got {value}")
        if self.d_sae is not None and self.k > self.d_sae:
            raise TrainError(f"k={self.k} exceeds d_sae={self.d_sae}", "lower k")
        if self.checkpoint_every < 0 or self.checkpoint_every % self.log_every:
            raise TrainError(
                f"checkpoint_every={self.checkpoint_every} is not a multiple of "
                f"log_every={self.log_every}",
                "pass a multiple of log_every (0 disables checkpoints)",
            )
        if self.lr_end is not None and self.lr_end < 0:
            raise TrainError(f"lr_end must be >= 0, got {self.lr_end}")
        if self.lr_schedule not in get_args(LrSchedule):
            raise TrainError(f"unknown lr_schedule {self.lr_schedule!r}",
                             f"use one of {', '.join(get_args(LrSchedule))}")  # fmt: skip
        if self.normalize not in get_args(Normalize):
            raise TrainError(f"unknown normalize {self.normalize!r}",
                             f"use one of {', '.join(get_args(Normalize))}")  # fmt: skip

    def settings(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Plan:
    """What a run resolves from the config and the store."""

    d_in: int
    d_sae: int
    n_steps: int
    lr_decay_steps: int
    lr_end: float
    n_train_frames: int
    shards: list[str] = field(default_factory=list)


# -- the store ---------------------------------------------------------------------------
def count_split_frames(store: Any, split: str = "train") -> int:
    """Frames of ``split`` ("train" or "heldout"): the store's count, or read from the
    ``split`` column of each shard."""
    from safetensors import safe_open

    if hasattr(store, "n_split"):
        return int(store.n_split(split))
    code = {"train": 0, "heldout": 1}[split]
    total = 0
    for shard in store.shards():
        with safe_open(str(shard), framework="pt") as f:
            total += int((f.get_tensor("split") == code).sum())
    return total


def _batches(store: Any, config: TrainConfig, skip: int) -> Iterator[torch.Tensor]:
    """Full batches of training frames, epoch after epoch (seed + epoch orders each), after
    skipping the first ``skip`` (those a resumed run has already trained on)."""
    n_yielded, epoch = 0, 0
    while True:
        empty = True
        for batch in store.iter_batches(
            config.batch_size, split="train", shuffle=True, seed=config.seed + epoch,
            buffer_frames=config.buffer_frames, epochs=1,
        ):  # fmt: skip
            empty = False
            if batch.shape[0] != config.batch_size:
                continue  # a short last batch: SAELens's counters assume full batches
            n_yielded += 1
            if n_yielded > skip:
                yield batch.to(torch.float32)
        if empty:
            raise TrainError("the store has no training frames", "extract more audio")
        epoch += 1


def prefetch(batches: Iterator[torch.Tensor], depth: int = 2) -> Iterator[torch.Tensor]:
    """``batches`` read ahead by a background thread (shard reading and decoding overlap the
    training step; order unchanged; an exception in the reader is raised here)."""
    items: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        items.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(done)
        except BaseException as exc:  # handed to the consumer
            items.put(exc)

    thread = threading.Thread(target=produce, name="sae-batches", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def _plan(store: Any, config: TrainConfig) -> _Plan:
    n_train = count_split_frames(store, "train")
    n_frames = config.n_frames if config.n_frames is not None else n_train
    n_steps = n_frames // config.batch_size
    if n_train < config.batch_size or n_steps < 1:
        raise TrainError(
            f"{n_frames} training frames ({n_train} in the store's train split) do not fill "
            f"one batch of {config.batch_size}",
            "lower --batch-size or extract more audio",
        )
    d_sae = config.d_sae or config.expansion * int(store.d_model)
    if config.k > d_sae:
        raise TrainError(f"k={config.k} exceeds d_sae={d_sae}", "lower k or raise d_sae")
    decay = config.lr_decay_steps if config.lr_decay_steps is not None else n_steps // 5
    if decay >= n_steps:
        raise TrainError(f"lr_decay_steps={decay} leaves no training before the decay "
                         f"({n_steps} steps)", "lower lr_decay_steps")  # fmt: skip
    lr_end = config.lr_end if config.lr_end is not None else config.lr / 10
    if decay > 0 and config.lr_schedule != "constant" and lr_end == 0:
        raise TrainError("a cosine schedule with lr_end=0 cannot be followed by a decay",
                         "set lr_end > 0 or lr_decay_steps=0")  # fmt: skip
    shards = [str(Path(s).relative_to(store.path)) for s in store.shards()]
    return _Plan(int(store.d_model), d_sae, n_steps, decay, lr_end, n_train, shards)


# -- building SAELens objects ------------------------------------------------------------
def _sae_config(config: TrainConfig, plan: _Plan, store: Any) -> Any:
    from sae_lens import (
        BatchTopKTrainingSAEConfig,
        JumpReLUTrainingSAEConfig,
        StandardTrainingSAEConfig,
        TopKTrainingSAEConfig,
    )
    from sae_lens.saes.sae import SAEMetadata

    common: dict[str, Any] = {
        "d_in": plan.d_in,
        "d_sae": plan.d_sae,
        "dtype": "float32",
        "device": config.device,
        "normalize_activations": config.normalize,
        "metadata": SAEMetadata(model_name=store.model, hook_name=store.site),
    }
    if config.architecture == "topk":
        return TopKTrainingSAEConfig(k=config.k, **common)
    if config.architecture == "batchtopk":
        return BatchTopKTrainingSAEConfig(k=config.k, **common)
    if config.architecture == "standard":
        return StandardTrainingSAEConfig(
            l1_coefficient=config.l1_coefficient,
            l1_warm_up_steps=config.l1_warm_up_steps,
            **common,
        )
    return JumpReLUTrainingSAEConfig(
        l0_coefficient=config.l0_coefficient, l0_warm_up_steps=config.l0_warm_up_steps,
        jumprelu_init_threshold=config.jumprelu_init_threshold,
        jumprelu_bandwidth=config.jumprelu_bandwidth, **common,
    )  # fmt: skip


def build_trainer(store: Any, config: TrainConfig, plan: _Plan, data: Iterator[torch.Tensor]):
    """A SAELens ``SAETrainer`` with a freshly initialised training SAE (seeded)."""
    from sae_lens.config import SAETrainerConfig
    from sae_lens.registry import get_sae_training_class
    from sae_lens.training.sae_trainer import SAETrainer

    sae_cfg = _sae_config(config, plan, store)
    sae_cls = get_sae_training_class(config.architecture)[0]
    if config.architecture == "topk" and config.sparse_decode:
        sae_cls = sparse_decode_topk_class()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        sae = sae_cls(sae_cfg)
    trainer_cfg = SAETrainerConfig(
        total_training_samples=plan.n_steps * config.batch_size,
        train_batch_size_samples=config.batch_size,
        lr=config.lr,
        lr_end=plan.lr_end,
        lr_scheduler_name=config.lr_schedule,
        lr_warm_up_steps=config.lr_warm_up_steps,
        lr_decay_steps=plan.lr_decay_steps,
        adam_beta1=config.adam_beta1,
        adam_beta2=config.adam_beta2,
        device=config.device,
        dead_feature_window=config.dead_feature_window,
        feature_sampling_window=config.feature_sampling_window,
        n_checkpoints=0,
    )
    return SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=data)


@functools.cache
def sparse_decode_topk_class() -> type:
    """SAELens's ``TopKTrainingSAE`` with the decoder (and the AuxK reconstruction) computed
    from the k active latents only (``embedding_bag``) instead of a dense [B, m] @ [m, d]
    product, and the decoder-norm rescaling of the pre-activations applied to the encoder's
    weights ([d, m]) instead of to the [B, m] pre-activations: the same function, loss and
    gradients up to float rounding (the test compares them with SAELens's class), three fewer
    dense matrix products per step and several fewer passes over [B, m] tensors. The codes
    handed to the trainer stay dense (its firing statistics read them); saved SAEs are plain
    SAELens "topk" SAEs."""
    import torch.nn.functional as F
    from sae_lens.saes.topk_sae import TopKTrainingSAE

    class SparseDecodeTopKTrainingSAE(TopKTrainingSAE):
        _active: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

        def _decoder_rows(self) -> torch.Tensor:
            if self.cfg.rescale_acts_by_decoder_norm:
                return self.W_dec / self.W_dec.norm(dim=-1, keepdim=True)
            return self.W_dec

        def encode_with_hidden_pre(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            sae_in = self.process_sae_in(x)
            if self.cfg.rescale_acts_by_decoder_norm:  # (x W + b) * n, scaled on [d, m]
                norm = self.W_dec.norm(dim=-1)
                hidden_pre = sae_in @ (self.W_enc * norm) + self.b_enc * norm
            else:
                hidden_pre = sae_in @ self.W_enc + self.b_enc
            hidden_pre = self.hook_sae_acts_pre(hidden_pre)
            top = hidden_pre.topk(self.cfg.k, dim=-1, sorted=False)
            values = top.values.relu()
            with torch.no_grad():
                acts = torch.zeros_like(hidden_pre).scatter_(-1, top.indices, values)
            acts = self.hook_sae_acts_post(acts)
            self._active = (acts, top.indices, values)
            return acts, hidden_pre

        def decode(self, feature_acts: torch.Tensor) -> torch.Tensor:
            active, self._active = self._active, None
            if active is None or active[0] is not feature_acts:
                return super().decode(feature_acts)  # codes from elsewhere: the dense path
            _, index, values = active
            rows = self._decoder_rows()
            out = F.embedding_bag(index, rows, per_sample_weights=values, mode="sum")
            out = self.hook_sae_recons(out + self.b_dec)
            out = self.run_time_activation_norm_fn_out(out)
            return self.reshape_fn_out(out, self.d_head)

        def calculate_topk_aux_loss(
            self,
            sae_in: torch.Tensor,
            sae_out: torch.Tensor,
            hidden_pre: torch.Tensor,
            dead_neuron_mask: torch.Tensor | None,
        ) -> torch.Tensor:
            """SAELens's AuxK loss, its reconstruction from the k_aux dead latents only."""
            if dead_neuron_mask is None or (n_dead := int(dead_neuron_mask.sum())) == 0:
                return sae_out.new_tensor(0.0)
            if self.cfg.normalize_activations in ("constant_norm_rescale", "layer_norm"):
                return super().calculate_topk_aux_loss(sae_in, sae_out, hidden_pre,
                                                       dead_neuron_mask)  # fmt: skip
            residual = (sae_in - sae_out).detach()
            k_aux = sae_in.shape[-1] // 2
            scale = min(n_dead / k_aux, 1.0)
            dead = torch.where(dead_neuron_mask[None], hidden_pre, -torch.inf)
            top = dead.topk(min(k_aux, n_dead), sorted=False)
            recons = F.embedding_bag(top.indices, self._decoder_rows(),
                                     per_sample_weights=top.values, mode="sum")  # fmt: skip
            recons = self.reshape_fn_out(recons, self.d_head)
            loss = (recons - residual).pow(2).sum(dim=-1).mean()
            return self.cfg.aux_loss_coefficient * scale * loss

    return SparseDecodeTopKTrainingSAE


@torch.no_grad()
def _init_from_sample(trainer: Any, store: Any, config: TrainConfig) -> None:
    """Scaling factor (mean norm -> sqrt(d)) and b_dec = mean, from a seeded training sample."""
    acts, _ = store.load(split="train", max_frames=config.n_norm_frames, seed=config.seed,
                         labels=False)  # fmt: skip
    acts = acts.to(torch.float64)
    scale = 1.0
    if config.normalize == "expected_average_only_in":
        scale = math.sqrt(acts.shape[1]) / float(acts.norm(dim=1).mean())
        trainer.activation_scaler.scaling_factor = scale
    trainer.sae.b_dec.data.copy_((acts.mean(0) * scale).to(trainer.sae.b_dec.dtype))


# -- checkpoints (no pickles) ------------------------------------------------------------
def save_checkpoint(trainer: Any, path: Path) -> None:
    """Training SAE weights and Adam moments (safetensors), counters and schedules (JSON),
    written to a fresh directory and swapped in, so a kill leaves the previous one."""
    from safetensors.torch import save_file

    tmp, old = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    sae = trainer.sae
    save_file({k: v.detach().contiguous() for k, v in sae.state_dict().items()},
              str(tmp / WEIGHTS_FILE))  # fmt: skip
    optim = trainer.optimizer.state_dict()
    tensors = {
        "act_freq_scores": trainer.act_freq_scores,
        "n_forward_passes_since_fired": trainer.n_forward_passes_since_fired,
    }
    for index, state in optim["state"].items():
        for name, value in state.items():
            tensors[f"optim.{index}.{name}"] = torch.as_tensor(value)
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(tmp / OPTIM_FILE))
    state = {
        "n_training_steps": trainer.n_training_steps,
        "n_training_samples": trainer.n_training_samples,
        "n_frac_active_samples": trainer.n_frac_active_samples,
        "started_fine_tuning": trainer.started_fine_tuning,
        "scaling_factor": trainer.activation_scaler.scaling_factor,
        "param_groups": optim["param_groups"],
        "lr_scheduler": trainer.lr_scheduler.state_dict(),
        "coefficient_schedulers": {
            n: s.state_dict() for n, s in trainer.coefficient_schedulers.items()
        },  # fmt: skip
    }
    (tmp / STATE_FILE).write_text(json.dumps(state), encoding="utf-8")
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def find_checkpoint(path: Path) -> Path | None:
    """The last complete checkpoint (``checkpoint/``, or ``checkpoint.old/`` if a kill fell
    between the two renames of `save_checkpoint`)."""
    for candidate in (path, path.with_name(path.name + ".old")):
        if (candidate / STATE_FILE).is_file():
            return candidate
    return None


def load_checkpoint(trainer: Any, path: Path) -> None:
    """Restore what `save_checkpoint` wrote into a freshly built trainer."""
    from safetensors.torch import load_file

    device = trainer.cfg.device
    state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    trainer.sae.load_state_dict(load_file(str(path / WEIGHTS_FILE), device=device))
    tensors = load_file(str(path / OPTIM_FILE), device=device)
    optim_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            optim_state.setdefault(int(index), {})[name] = value
    groups = state["param_groups"]
    for group in groups:
        group["betas"] = tuple(group["betas"])
    trainer.optimizer.load_state_dict({"state": optim_state, "param_groups": groups})
    trainer.lr_scheduler.load_state_dict(state["lr_scheduler"])
    for name, sched in state["coefficient_schedulers"].items():
        trainer.coefficient_schedulers[name].load_state_dict(sched)
    trainer.act_freq_scores = tensors["act_freq_scores"]
    trainer.n_forward_passes_since_fired = tensors["n_forward_passes_since_fired"]
    trainer.n_training_steps = int(state["n_training_steps"])
    trainer.n_training_samples = int(state["n_training_samples"])
    trainer.n_frac_active_samples = int(state["n_frac_active_samples"])
    trainer.started_fine_tuning = bool(state["started_fine_tuning"])
    trainer.activation_scaler.scaling_factor = state["scaling_factor"]


# -- the loop ----------------------------------------------------------------------------
class _Window:
    """Training-curve statistics summed over the steps since the last row."""

    def __init__(self) -> None:
        self.n = 0
        self.sums: dict[str, float] = {}

    @torch.no_grad()
    def add(self, out: Any) -> None:
        x, x_hat = out.sae_in.float(), out.sae_out.float()
        err = float((x_hat - x).pow(2).sum())
        var = float((x - x.mean(0)).pow(2).sum())
        values = {
            "loss": float(out.loss),
            "fvu": err / var if var > 0 else math.nan,
            "l0": int(torch.count_nonzero(out.feature_acts)) / x.shape[0],
            **{name: float(v) for name, v in out.losses.items()},
        }
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.n += 1

    def row(self, trainer: Any) -> dict[str, Any]:
        means = {name: total / max(self.n, 1) for name, total in self.sums.items()}
        row = {
            "step": trainer.n_training_steps,
            "n_frames": trainer.n_training_samples,
            "lr": trainer.optimizer.param_groups[0]["lr"],
            "n_dead": int(trainer.dead_neurons.sum()),
            **means,
        }
        self.__init__()  # type: ignore[misc]
        return row


def _loop(trainer: Any, data: Iterator[torch.Tensor], run: RunDir, config: TrainConfig,
          n_steps: int, ckpt: Path, progress: bool) -> None:  # fmt: skip
    from tqdm import tqdm

    window = _Window()
    bar = tqdm(total=n_steps, initial=trainer.n_training_steps, desc=f"train {config.architecture}",
               unit="step", disable=not progress)  # fmt: skip
    with bar, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*")
        while trainer.n_training_steps < n_steps:
            trainer.maybe_reset_sparsity()
            window.add(trainer.step(next(data)))
            trainer.n_training_steps += 1
            step = trainer.n_training_steps
            if step % config.log_every == 0 or step == n_steps:
                row = window.row(trainer)
                if str(step) not in run.done:  # a resumed run recomputes rows it has
                    run.append(row)
                bar.set_postfix(fvu=f"{row['fvu']:.3f}", l0=f"{row['l0']:.1f}")
            if config.checkpoint_every and step % config.checkpoint_every == 0 and step < n_steps:
                save_checkpoint(trainer, ckpt)
            bar.update(1)


def _finish(trainer: Any, out_dir: Path) -> Any:
    """Fold the activation scale into the weights and save the inference SAE (SAELens)."""
    sae = trainer.sae
    if trainer.activation_scaler.scaling_factor is not None:
        sae.fold_activation_norm_scaling_factor(trainer.activation_scaler.scaling_factor)
        trainer.activation_scaler.scaling_factor = None
    trainer.set_final_sae_metadata()
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    sae.save_inference_model(str(tmp))
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return sae


def train_sae(
    store: Any,
    config: TrainConfig | None = None,
    out: str | os.PathLike[str] = "sae-train",
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a SAE on ``store``'s training split and write the run directory ``out``.

    ``out/sae/`` holds the SAE in SAELens's format, ``out/rows.jsonl`` the training curves,
    ``out/summary.json`` the final statistics (returned). A killed run re-run with the same
    arguments resumes from ``out/checkpoint/``; a finished one returns its summary.
    """
    config = config or TrainConfig()
    plan = _plan(store, config)
    identity = {
        **config.settings(),
        "store": str(store.path),
        "site": store.site,
        "model": store.model,
        "shards": plan.shards,
    }
    with RunDir.open(
        out, study=STUDY, config=identity, format_version=FORMAT_VERSION, key="step",
        inputs={"store_rows": Path(store.path) / "rows.jsonl"}, overwrite=overwrite,
        artifacts=(SAE_DIR, CHECKPOINT_DIR, CHECKPOINT_DIR + ".old", CHECKPOINT_DIR + ".tmp",
                   SAE_DIR + ".tmp"),
    ) as run:  # fmt: skip
        if (run.path / SUMMARY_FILE).is_file() and (run.path / SAE_DIR / "cfg.json").is_file():
            return json.loads((run.path / SUMMARY_FILE).read_text(encoding="utf-8"))
        return _train(store, config, plan, run, progress)


def _train(store: Any, config: TrainConfig, plan: _Plan, run: RunDir, progress: bool) -> dict:
    ckpt_path = run.file(CHECKPOINT_DIR)
    found = find_checkpoint(ckpt_path)
    start = time.perf_counter()
    trainer = build_trainer(store, config, plan, iter(()))
    resumed_at = 0
    if found is not None:
        load_checkpoint(trainer, found)
        resumed_at = trainer.n_training_steps
    else:
        _init_from_sample(trainer, store, config)
    run.start()
    data = prefetch(_batches(store, config, skip=resumed_at))
    trainer.data_provider = data
    loop_start = time.perf_counter()
    _loop(trainer, data, run, config, plan.n_steps, ckpt_path, progress)
    wall = time.perf_counter() - start
    loop_s = time.perf_counter() - loop_start
    n_dead = int(trainer.dead_neurons.sum())
    _finish(trainer, run.file(SAE_DIR))
    rows = run.rows()
    last = rows[-1] if rows else {}
    summary = {
        "study": STUDY,
        "architecture": config.architecture,
        "site": store.site,
        "model": store.model,
        "d_in": plan.d_in,
        "d_sae": plan.d_sae,
        "k": config.k if config.architecture in ("topk", "batchtopk") else None,
        "n_steps": plan.n_steps,
        "n_frames_trained": plan.n_steps * config.batch_size,
        "n_train_frames": plan.n_train_frames,
        "epochs": plan.n_steps * config.batch_size / plan.n_train_frames,
        "batch_size": config.batch_size,
        "lr_decay_steps": plan.lr_decay_steps,
        "lr_end": plan.lr_end,
        "final": {k: last.get(k) for k in ("loss", "mse_loss", "fvu", "l0")},
        "n_dead_latents": n_dead,
        "dead_fraction_train": n_dead / plan.d_sae,
        "resumed_at_step": resumed_at,
        "wall_s": wall,
        "frames_per_s": (plan.n_steps - resumed_at) * config.batch_size / max(wall, 1e-9),
        "loop_frames_per_s": (plan.n_steps - resumed_at) * config.batch_size / max(loop_s, 1e-9),
        "sae": SAE_DIR,
        "curves": {k: [r.get(k) for r in rows] for k in ("step", "loss", "fvu", "l0", "lr")},
    }
    run.write_summary(summary)
    shutil.rmtree(ckpt_path, ignore_errors=True)
    return summary


__all__ = [
    "ARCHITECTURES",
    "TrainConfig",
    "TrainError",
    "build_trainer",
    "count_split_frames",
    "find_checkpoint",
    "load_checkpoint",
    "prefetch",
    "save_checkpoint",
    "sparse_decode_topk_class",
    "train_sae",
]
