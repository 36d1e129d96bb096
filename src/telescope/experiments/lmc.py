"""Linear mode connectivity and gradient stabilisation: Frankle et al.'s spawning experiment (paper Fig. 6).

A parent run is trained from initialisation (or from pretrained weights); at each spawn
step t' two children continue from the parent's full training state (weights, momentum)
with different batch orders (and augmentations), for ``child_steps`` steps or to the end
(NOTE [child length]). Their weights are
interpolated over α ∈ [0, 1]; per t' we log the loss and error barriers of the averaged
model against the children (at α = ½ and the maximum over α), the gradient change by
layer between the parent at t' and t' + Δ (Δ = one epoch unless set), and the weight-averaging view
of the telescoping model (digest §7.1 eq. 10): averaged-weights model vs output ensemble
vs the first-order prediction f_{θ_t'} + ∇f_{θ_t'}·(θ_avg − θ_t'). Digest: §7.

# NOTE [lmc choices]
# - Gradient change: the true-class logit, parent checkpoints t' and t' + Δ
#   (NOTE [gradient change] in telescope.measures.averaging).
# - First-order prediction: gradients frozen at the spawn point, t* = t'.
# - BatchNorm: averaged weights get running statistics re-estimated on training data
#   (``bn_recompute=True``, the default; ``n_bn`` images); children keep their own.
# - Child length: NOTE [child length].
# - Pretrained variant (NOTE [pretrained source]).
# - Barriers: loss/error at α = ½ minus the children's mean, and max over α of
#   (value at α − linear interpolation of the children's values).

# NOTE [child length]
# The paper (after Frankle et al.) trains every child to the same final step T, so a child
# spawned at t' trains T − t' steps: late spawns train less, and "the barrier vanishes with
# t'" is confounded with "shorter children drift apart less". ``child_steps > 0`` makes every
# child train exactly that many steps after spawning, whatever t' (the quick preset); 0 keeps
# the paper's protocol (the paper preset). A child's lr follows the schedule at its own
# absolute step (t' + its steps), so with milestones the two protocols also differ in the lr a
# late child sees; the CPU presets have no milestones. Each pair logs ``child/steps``.

# NOTE [pretrained source]
# The paper pretrains ResNet-20 on SVHN, which is not available offline. The source
# must be offline in CI (../shared/data) and, for the claim to be testable, the target
# must be unstable at random init: MNIST nets are linearly connected almost from t' = 0,
# so Fashion-MNIST → MNIST cannot show a lower barrier. Default pairs
# (``pretrain_dataset=""``): CIFAR-10 (cat/dog offline) ← MNIST 10-class, resized 28 → 32
# bilinearly and replicated to 3 channels (``data.vision.match_shape``); MNIST ←
# Fashion-MNIST (when the Debian package or files are present); Fashion-MNIST ← MNIST.
# Pretraining: ``pretrain_steps`` of the same SGD (no augmentation: flips change digits),
# lr divided by 10 at 50 % and 75 %. Transfer: every parameter and buffer except the
# output layer (the last nn.Linear), which stays as freshly initialised with the seed of
# the random arm, so the two arms share their head at t' = 0 and differ only in the
# feature layers. The source's classes mean nothing for the target, hence a fresh head.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from telescope.data.core import Split
from telescope.data.vision import augment_crop_flip, classification, match_shape
from telescope.errors import ConfigError
from telescope.experiments.base import RunContext, bounded
from telescope.measures import (first_order_prediction, gradient_change_by_kind, gradient_change_by_layer,
                                has_batchnorm, interpolate, interpolation_barrier, layer_kinds,
                                recompute_batchnorm)
from telescope.models import MLP
from telescope.models.convnets import ResNet20, SmallCNN
from telescope.train import batches, fit

VARIANTS = ("random", "pretrained")
SOURCE_FOR = {"cifar10": "mnist", "mnist": "fashion-mnist", "fashion-mnist": "mnist"}  # NOTE [pretrained source]


@dataclass(frozen=True)
class Config:
    model: str = bounded("mlp", choices=("mlp", "cnn", "cnn-bn", "resnet20", "linear"))  # linear: a control
    dataset: str = "mnist"             # mnist | cifar10 (| fashion-mnist)
    n_train: int = bounded(5000, ge=1)
    n_eval: int = bounded(1000, ge=1)  # test examples for barriers and the weight-averaging gaps
    n_grad: int = bounded(256, ge=1)  # test examples for the gradient change
    width: int = bounded(256, ge=1)   # mlp hidden width
    channels: tuple[int, ...] = bounded((16, 32), ge=1)  # cnn / cnn-bn: the two conv blocks' channels
    steps: int = bounded(1500, ge=1)
    child_steps: int = bounded(0, ge=0)  # NOTE [child length]: steps every child trains; 0 = to `steps`
    batch_size: int = bounded(128, ge=1)
    lr: float = bounded(0.1, gt=0)
    momentum: float = bounded(0.9, ge=0, lt=1)
    weight_decay: float = bounded(1e-4, ge=0)
    milestones: tuple[int, ...] = bounded((), ge=1)  # lr divided by lr_drop at these steps
    lr_drop: float = bounded(10.0, ge=1)
    spawn_steps: tuple[int, ...] = bounded((0, 10, 40, 150, 600), ge=0)
    delta: int = bounded(0, ge=0)  # gradient-change horizon; 0 = one epoch
    pairs: int = bounded(1, ge=1)  # child pairs per spawn point (inner seeds)
    seeds: int = bounded(1, ge=1)  # parent runs (outer seeds)
    alphas: int = bounded(30, ge=2)
    n_bn: int = bounded(2048, ge=1)  # training images that re-estimate BatchNorm statistics of mixes
    augment: bool = False
    bn_recompute: bool = True
    variants: tuple[str, ...] = bounded(("random", "pretrained"), choices=VARIANTS, nonempty=True)
    pretrain_dataset: str = ""         # "" = SOURCE_FOR[dataset] (NOTE [pretrained source])
    pretrain_steps: int = bounded(1000, ge=1)
    pretrain_milestones: tuple[int, ...] = bounded((), ge=1)  # () = 50 % and 75 % of pretrain_steps
    finetune_steps: int = bounded(0, ge=0)  # the pretrained arm's T; 0 = steps (and milestones)
    finetune_milestones: tuple[int, ...] = bounded((), ge=1)  # used when finetune_steps > 0
    finetune_lr_drop: float = bounded(0.0, ge=0)  # pretraining's and fine-tuning's drop; 0 = lr_drop
    finetune_spawn_steps: tuple[int, ...] = bounded((), ge=0)  # t' grid of the pretrained arm; () = spawn_steps
    finetune_pairs: int = bounded(0, ge=0)  # child pairs per t' in the pretrained arm; 0 = pairs
    seed: int = bounded(0, ge=0)

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(n_train=512, n_eval=200, n_grad=32, width=32, steps=40, child_steps=20, batch_size=64,
                     spawn_steps=(0, 20), alphas=5, variants=("random",), pretrain_steps=20),
        # Instability at init needs a convnet on natural images (the MNIST MLP is linearly connected
        # almost from t' = 0, as Frankle et al. found for LeNet). BatchNorm for fact 20; 8/16 channels
        # and batch 32 keep 3 outer seeds in < 10 CPU-min; lr 0.01 (0.05 and 0.1 collapse to one class
        # with BatchNorm at batch 32). Pretrained arm: MNIST source (NOTE [pretrained source]), one pair.
        "quick": dict(model="cnn-bn", channels=(8, 16), dataset="cifar10", n_train=10000, n_eval=500, n_bn=256,
                      batch_size=32, lr=0.01, augment=True, steps=1300, child_steps=500, delta=100,
                      spawn_steps=(0, 50, 200, 800), alphas=11, pairs=2, seeds=3,
                      variants=("random", "pretrained"), pretrain_steps=500, finetune_pairs=1),
        "paper": dict(model="resnet20", dataset="cifar10", n_train=50000, n_eval=10000, steps=63000,
                      milestones=(32000, 48000), augment=True, pairs=3, seeds=3, variants=("random", "pretrained"),
                      spawn_steps=(0, 4, 25, 50, 100, 224, 500, 1000, 2000, 4472, 10000, 25100), delta=390,
                      # the paper's fine-tuning sweep (digest §7.2); source MNIST, not SVHN (NOTE [pretrained source])
                      pretrain_steps=30000, pretrain_milestones=(15000, 25000), finetune_steps=12800,
                      finetune_milestones=(6400, 9600), finetune_lr_drop=5.0,
                      finetune_spawn_steps=(0, 4, 25, 50, 100, 224, 500, 1000, 2000, 4472)),
    }

    def validate(self) -> None:
        for variant in self.variants:
            arm = self.arm(variant)
            if any(t >= arm.steps for t in arm.spawn_steps):
                raise ConfigError(f"lmc: every spawn step of the {variant} arm must lie in [0, steps={arm.steps}), "
                                  f"got {arm.spawn_steps}; lower the spawn steps or raise "
                                  f"{'finetune_steps' if self.finetune_steps and variant == 'pretrained' else 'steps'}")
        if self.model in ("cnn", "cnn-bn") and len(self.channels) != 2:
            raise ConfigError(f"lmc: channels must name the two conv blocks' widths, got {self.channels}; "
                              "e.g. --set channels=16,32")
        if "pretrained" in self.variants and self.source() == self.dataset:
            raise ConfigError(f"lmc: pretrain_dataset={self.source()!r} is the target dataset; choose another "
                              f"(e.g. {SOURCE_FOR.get(self.dataset, 'mnist')!r})")

    def source(self) -> str:
        """The pretraining dataset (NOTE [pretrained source])."""
        return self.pretrain_dataset or SOURCE_FOR.get(self.dataset, "mnist")

    def arm(self, variant: str) -> "Config":
        """The config one variant's sweep runs with: its t' grid, pairs, T, milestones and lr drop
        (the pretrained arm's ``finetune_*`` fields resolved; the random arm is ``self``)."""
        if variant != "pretrained":
            return self
        out = replace(self, spawn_steps=self.finetune_spawn_steps or self.spawn_steps,
                      pairs=self.finetune_pairs or self.pairs, lr_drop=self.finetune_lr_drop or self.lr_drop)
        if self.finetune_steps:
            out = replace(out, steps=self.finetune_steps, milestones=self.finetune_milestones)
        return out

    def child_length(self, t: int) -> int:
        """Steps a child spawned at t' trains (NOTE [child length])."""
        return self.child_steps or self.steps - t


def build_model(cfg: Config, in_channels: int, image_size: int, classes: int) -> nn.Module:
    if cfg.model in ("mlp", "linear"):
        depth = 1 if cfg.model == "linear" else 3
        return MLP(in_channels * image_size ** 2, cfg.width, depth, classes, squeeze=False)
    if cfg.model in ("cnn", "cnn-bn"):
        return SmallCNN(in_channels, classes, channels=tuple(cfg.channels), image_size=image_size,
                        batchnorm=cfg.model == "cnn-bn")
    return ResNet20(classes, in_channels)


class Trainer:
    """SGD with momentum on cross-entropy through :func:`telescope.train.fit`; its full state
    (model, optimizer, batch stream, step count) can be copied for spawning."""

    def __init__(self, cfg: Config, model: nn.Module, data, seed: int, device: str):
        self.cfg, self.model, self.data, self.device = cfg, model, data, device
        self.opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                   weight_decay=cfg.weight_decay)
        self.step_count = 0
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        self.gen = torch.Generator().manual_seed(seed)
        self.stream = batches(len(self.data.y_train), self.cfg.batch_size, self.gen)

    def lr_at(self, step: int) -> float:
        return self.cfg.lr / self.cfg.lr_drop ** sum(step >= m for m in self.cfg.milestones)

    def _schedule(self, step: int, batch: torch.Tensor) -> None:
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(step - 1)      # the steps taken before this one

    def _prepare(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cfg.augment:
            x = augment_crop_flip(x, self.gen)
        return x.to(self.device), y.to(self.device)

    def train(self, steps: int) -> None:
        self.step_count = fit(self.model, self.opt, F.cross_entropy, self.data.x_train, self.data.y_train,
                              steps=steps, stream=self.stream, before_step=[self._schedule], prepare=self._prepare,
                              start_step=self.step_count)

    def spawn(self, seed: int) -> "Trainer":
        child = copy.copy(self)
        child.model = copy.deepcopy(self.model)
        child.opt = torch.optim.SGD(child.model.parameters(), lr=self.cfg.lr, momentum=self.cfg.momentum,
                                    weight_decay=self.cfg.weight_decay)
        child.opt.load_state_dict(copy.deepcopy(self.opt.state_dict()))
        child.reseed(seed)
        return child


def params_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, torch.Tensor]:
    """(mean cross-entropy, error rate, logits) in eval mode."""
    model.eval()
    logits = torch.cat([model(c) for c in x.split(1024)])
    return (float(F.cross_entropy(logits, y)), float((logits.argmax(1) != y).double().mean()), logits)


def compare_children(cfg: Config, model: nn.Module, spawn_params, a_state, b_state, data, device, sink, t: int) -> None:
    """Barriers over α and the weight-averaging gaps at α = ½ for one pair of children."""
    x_eval, y_eval = data.x_test[:cfg.n_eval].to(device), data.y_test[:cfg.n_eval].to(device)
    x_bn = data.x_train[:cfg.n_bn].to(device)
    work = copy.deepcopy(model)
    values = []
    alphas = np.linspace(0.0, 1.0, cfg.alphas)
    for alpha in alphas:
        work.load_state_dict(interpolate(a_state, b_state, float(alpha)))
        if cfg.bn_recompute and has_batchnorm(work) and 0.0 < alpha < 1.0:
            recompute_batchnorm(work, x_bn)
        values.append(evaluate(work, x_eval, y_eval)[:2])
    loss = np.array([v[0] for v in values])
    err = np.array([v[1] for v in values])
    for i, alpha in enumerate(alphas):
        sink.log_dict(i, "interp", {"alpha": float(alpha), "loss": float(loss[i]), "error": float(err[i]),
                                    "spawn_step": float(t)})
    # α weights the first child (a): value at α = 0 is child b, at α = 1 child a
    (loss_half, loss_max), (err_half, err_max) = (interpolation_barrier(alphas, v) for v in (loss, err))
    sink.log_dict(t, "test", {
        "barrier/loss_half": loss_half, "barrier/loss_max": loss_max,
        "barrier/error_half": err_half, "barrier/error_max": err_max,
        "child/loss": float(0.5 * (loss[0] + loss[-1])),
        "child/error": float(0.5 * (err[0] + err[-1])),
    })
    # weight-averaging view (eq. 10) at α = ½ on pre-softmax logits
    work.load_state_dict(a_state)
    _, _, fa = evaluate(work, x_eval, y_eval)
    work.load_state_dict(b_state)
    _, _, fb = evaluate(work, x_eval, y_eval)
    avg_state = interpolate(a_state, b_state, 0.5)
    work.load_state_dict(avg_state)
    if cfg.bn_recompute and has_batchnorm(work):
        recompute_batchnorm(work, x_bn)
    _, _, f_avg = evaluate(work, x_eval, y_eval)
    names = [k for k, _ in model.named_parameters()]
    f_first = first_order_prediction(work, spawn_params, {k: avg_state[k] for k in names}, x_eval)
    ensemble = 0.5 * (fa + fb)
    sink.log_dict(t, "test", {
        "wa/avg_vs_ensemble": float((f_avg - ensemble).abs().mean()),
        "wa/avg_vs_first_order": float((f_avg - f_first).abs().mean()),
        "wa/ensemble_vs_first_order": float((ensemble - f_first).abs().mean()),
        "wa/ensemble_error": float((ensemble.argmax(1) != y_eval).double().mean()),
    })


def pretrain(cfg: Config, seed: int, in_ch: int, size: int, ctx: RunContext) -> tuple[dict, float]:
    """Train ``cfg.model`` on the source task (NOTE [pretrained source]).

    Returns (state dict, source test error on 1,000 images). The source images are mapped
    to the target's (in_ch, size, size) by :func:`match_shape`.
    """
    source, classes = classification(cfg.source(), ctx.data_dir, n_train=cfg.n_train, n_test=1000, seed=seed)
    source = Split(match_shape(source.x_train, in_ch, size), source.y_train,
                   match_shape(source.x_test, in_ch, size), source.y_test)
    torch.manual_seed(seed + 7919)
    model = build_model(cfg, in_ch, size, len(classes)).to(ctx.device)
    steps = cfg.pretrain_steps
    pre = replace(cfg, augment=False, steps=steps, lr_drop=cfg.finetune_lr_drop or cfg.lr_drop,
                  milestones=cfg.pretrain_milestones or (steps // 2, 3 * steps // 4))
    Trainer(pre, model, source, seed + 7919, ctx.device).train(steps)
    error = evaluate(model, source.x_test.to(ctx.device), source.y_test.to(ctx.device))[1]
    return state_of(model), error


def transfer(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Load ``state`` into ``model`` except the output layer (the last nn.Linear), in place.

    Returns the names kept fresh. Raises ConfigError when a transferred tensor's shape
    differs (a source network of another architecture).
    """
    head = next(layer for layer, kind in layer_kinds(model).items() if kind == "output")
    prefix = "" if head == "(root)" else head + "."
    own = model.state_dict()
    fresh = [k for k in own if k.startswith(prefix)]
    for k in own:
        if k in fresh:
            continue
        if k not in state or state[k].shape != own[k].shape:
            got = tuple(state[k].shape) if k in state else "missing"
            raise ConfigError(f"lmc: cannot transfer {k}: the pretrained network has {got}, the target "
                              f"{tuple(own[k].shape)}; pretrain the same model on inputs of the target's shape")
        own[k] = state[k]
    model.load_state_dict(own)
    return fresh


def initial_model(cfg: Config, variant: str, seed: int, in_ch: int, size: int, classes: int,
                  ctx: RunContext) -> tuple[nn.Module, dict[str, float]]:
    """The parent's θ_0 for one variant and outer seed, and facts to log (source error).

    Both variants draw the same random initialisation from ``seed``; "pretrained" then
    overwrites everything but the output layer with the source-trained weights.
    """
    torch.manual_seed(seed)
    model = build_model(cfg, in_ch, size, classes).to(ctx.device)
    if variant != "pretrained":
        return model, {}
    state, error = pretrain(cfg, seed, in_ch, size, ctx)
    transfer(model, state)
    return model, {"pretrain/source_error": error}


def child_seed(outer: int, pair: int, j: int, t: int) -> int:
    """The batch-order (and augmentation) seed of child ``j`` ∈ {0, 1} of ``pair`` spawned at t'
    from the parent of outer seed ``outer``: distinct across children, pairs, t' and seeds."""
    return 1_000_003 * (outer + 1) + 1009 * pair + 17 * j + t


def train_pair(snapshot: Trainer, seeds: tuple[int, int], steps: int) -> list[Trainer]:
    """Two children of ``snapshot`` (a frozen parent state), each reseeded and trained ``steps`` steps."""
    children = []
    for seed in seeds:
        child = snapshot.spawn(seed)
        child.train(steps)
        children.append(child)
    return children


def describe_dataset(name: str, classes: tuple[str, ...]) -> str:
    """A caption's name for the data that ran: the shared CIFAR-10 copy holds only cats and dogs."""
    if name == "cifar10" and len(classes) < 10:
        return f"CIFAR-10 {'/'.join(classes)} ({len(classes)} classes)"
    return {"cifar10": "CIFAR-10", "mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}.get(name, name)


def run(cfg: Config, sink, ctx: RunContext = RunContext()) -> dict[str, Any]:
    data, classes = classification(cfg.dataset, ctx.data_dir, n_train=cfg.n_train,
                                   n_test=max(cfg.n_eval, cfg.n_grad), seed=cfg.seed)
    in_ch, size = data.x_train.shape[1], data.x_train.shape[2]
    delta = cfg.delta or max(1, cfg.n_train // cfg.batch_size)
    x_grad, y_grad = data.x_test[:cfg.n_grad].to(ctx.device), data.y_test[:cfg.n_grad].to(ctx.device)
    arms = {variant: cfg.arm(variant) for variant in cfg.variants}
    bar = sink.progress(sum(cfg.seeds * len(a.spawn_steps) * a.pairs for a in arms.values()), "lmc")
    for variant, arm in arms.items():
        for outer in range(cfg.seed, cfg.seed + cfg.seeds):
            model, facts = initial_model(cfg, variant, outer, in_ch, size, len(classes), ctx)
            parent = Trainer(arm, model, data, outer, ctx.device)
            # the parent's checkpoints at every t' and t' + Δ (for the gradient change)
            marks = sorted({*arm.spawn_steps, *(t + delta for t in arm.spawn_steps)})
            snapshots: dict[int, Trainer] = {}
            for mark in marks:
                parent.train(mark - parent.step_count)
                snapshots[mark] = parent.spawn(outer)  # a frozen copy of the full training state
            key = f"{variant}/seed={outer}/gradients"
            if not sink.unit_done(key):
                with sink.unit(key, variant=variant, seed=outer, pair=-1) as unit:
                    if facts:
                        unit.log_dict(0, "source", facts)
                    for t in arm.spawn_steps:
                        change = gradient_change_by_layer(model, params_of(snapshots[t].model),
                                                          params_of(snapshots[t + delta].model), x_grad, y_grad)
                        unit.log_dict(t, "test", {f"grad_change/{k}": v for k, v in change.items()})
                        kinds = gradient_change_by_kind(model, change)
                        unit.log_dict(t, "test", {f"grad_change_kind/{k}": v for k, v in kinds.items()})
                        unit.log(t, "test", "spawn_error", evaluate(snapshots[t].model, x_grad, y_grad)[1])
            for t in arm.spawn_steps:
                for pair in range(arm.pairs):
                    key = f"{variant}/seed={outer}/t={t}/pair={pair}"
                    if sink.unit_done(key):
                        bar.update(1)
                        continue
                    with sink.unit(key, variant=variant, seed=outer, pair=pair) as unit:
                        a, b = train_pair(snapshots[t], (child_seed(outer, pair, 0, t), child_seed(outer, pair, 1, t)),
                                          arm.child_length(t))
                        # both children train arm.child_length(t) steps (NOTE [child length])
                        unit.log(t, "test", "child/steps", float(a.step_count - t))
                        compare_children(cfg, model, params_of(snapshots[t].model), state_of(a.model),
                                         state_of(b.model), data, ctx.device, unit, t)
                    bar.update(1)
    bar.close()
    summary = summarize(sink.metrics())
    summary["data/description"] = describe_dataset(cfg.dataset, classes)
    summary["delta"] = delta
    if "pretrained" in cfg.variants:
        summary["pretrained/source_dataset"] = cfg.source()
    return summary


def summarize(frame) -> dict[str, Any]:
    """Per variant and t': the mean over outer seeds and pairs of the max barriers and the children's
    error (with ``_se``, the standard error over those seed × pair values as in the paper's 3 × 3, and
    ``_n``), and the mean over outer seeds of every gradient change (``_se`` where seeds > 1)."""
    out: dict[str, Any] = {}
    test = frame[(frame["split"] == "test")]
    wanted = {"barrier/error_max": "error_barrier_max", "barrier/loss_max": "loss_barrier_max",
              "child/error": "child_error"}
    for variant, g in test.groupby("variant"):
        picked = g[g["name"].isin(list(wanted)) | g["name"].str.startswith("grad_change")]
        for (name, t), values in picked.groupby(["name", "step"])["value"]:
            key = f"{variant}/t={t}/{wanted.get(name, name)}"
            out[key] = float(values.mean())
            if len(values) > 1:
                out[key + "_se"] = float(values.std(ddof=1) / np.sqrt(len(values)))
            if name in wanted:
                out[key + "_n"] = int(len(values))
    source = frame[(frame["split"] == "source") & (frame["name"] == "pretrain/source_error")]
    if len(source):
        out["pretrained/source_error"] = float(source["value"].mean())
    return out
