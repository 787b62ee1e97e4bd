"""RQ-VAE semantic IDs in PyTorch, LETTER-style (Wang et al., CIKM 2024; docs/design.md#tokenizers).

    x ──MLP encoder──▶ z ──residual quantizer (L codebooks)──▶ z_q ──MLP decoder──▶ x̂

Level l picks the nearest codeword to the residual left by levels < l; gradients pass
the quantizer with the straight-through estimator.  Loss::

    MSE(x̂, x)  +  quant_weight · mean_l [ MSE(q_l, sg r_l) + β · MSE(sg q_l, r_l) ]

with commitment β = 0.25.  Codebooks start from residual k-means (faiss) on the
encoder output of all items.  Optionally the last level is balanced during training by
Sinkhorn–Knopp on the batch (float64, log domain): it spreads items over codes and so
lowers collisions; inference always uses plain argmin codes.  Training keeps the state
with the lowest collision rate, the criterion the reference uses.

One addition to the reference: after every epoch, codewords that no item chose are
moved onto residuals of random items ("dead-code restart", ``restart_dead_codes``).
Without it the early encoder drift kills most of the level-0 codebook and short runs
end with far more collisions.

Defaults are small (in_dim → 256 → 128 → 32 MLP, 3 × 256 codes, 60 epochs of batch
1024), sized for CPU training.
:meth:`RQVAEConfig.paper` gives the reference sizes.

Left out (documented, not implemented): the reference's CF-alignment term (needs
pretrained SASRec item embeddings that only exist for three datasets and is inert
elsewhere) and its diversity term (per-epoch constrained re-clustering of every
codebook with a per-sample Python loop).  The reference's KMeansConstrained
initialisation is replaced by plain faiss residual k-means.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from seqrec_pipeline.errors import InputError
from seqrec_pipeline.models.tokenizers.collisions import collision_rate, level_stats
from seqrec_pipeline.models.tokenizers.rqkmeans import check_finite, rqkmeans

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.pt"


@dataclass
class RQVAEConfig:
    """Architecture and training settings (one flat dict, so it maps to Kedro params).

    ``in_dim`` is filled in from the data by :func:`train_rqvae`.
    """

    # architecture
    in_dim: int | None = None
    hidden_dims: tuple[int, ...] = (256, 128)
    e_dim: int = 32
    codebook_sizes: tuple[int, ...] = (256, 256, 256)
    dropout: float = 0.0
    # Divide inputs by their global std (the factor is stored in the model).  The reference
    # does this when std < 0.2; on unit-norm sentence embeddings it made early training
    # unstable here (codebook collapse, far more collisions), so it is off.
    normalize_input: bool = False
    # loss
    commitment_beta: float = 0.25
    quant_weight: float = 1.0
    # Sinkhorn balancing of the last level during training; 0 disables it
    sinkhorn_epsilon: float = 0.003
    sinkhorn_iters: int = 10
    # optimisation
    epochs: int = 60
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 1e-4
    eval_every: int = 10
    kmeans_init: bool = True
    kmeans_iters: int = 20
    # After each epoch, move codewords that no item chose onto residuals of random items
    # (codebook "restart", not in the reference).  See train_rqvae.
    restart_dead_codes: bool = True

    def __post_init__(self):
        self.hidden_dims = tuple(int(h) for h in self.hidden_dims)
        self.codebook_sizes = tuple(int(k) for k in self.codebook_sizes)
        if not self.codebook_sizes or min(self.codebook_sizes) < 1:
            raise InputError(f"codebook_sizes must be positive, got {self.codebook_sizes}")
        if self.epochs < 1 or self.batch_size < 1 or self.eval_every < 1:
            raise InputError("epochs, batch_size and eval_every must be >= 1")
        if self.sinkhorn_epsilon < 0:
            raise InputError(f"sinkhorn_epsilon must be >= 0, got {self.sinkhorn_epsilon}")

    @property
    def n_levels(self) -> int:
        return len(self.codebook_sizes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden_dims"] = list(self.hidden_dims)
        d["codebook_sizes"] = list(self.codebook_sizes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RQVAEConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"unknown RQ-VAE config keys {unknown}; known keys: {sorted(known)}")
        return cls(**d)

    @classmethod
    def paper(cls, **overrides) -> "RQVAEConfig":
        """The reference (LETTER/GAMER) sizes: days of GPU time.

        Not reproduced: CF alignment (α 0.02) and the diversity loss (β 1e-4),
        and the KMeansConstrained initialisation.
        """
        paper = dict(
            hidden_dims=(2048, 1024, 512, 256, 128, 64),
            e_dim=32,
            codebook_sizes=(256, 256, 256, 256),
            normalize_input=False,  # the reference rescales only when the global std < 0.2
            sinkhorn_epsilon=0.003,
            sinkhorn_iters=50,
            epochs=20000,
            batch_size=1024,
            lr=1e-3,
            weight_decay=1e-4,
            eval_every=2000,
            kmeans_iters=10,
            restart_dead_codes=False,
        )
        paper.update(overrides)
        return cls(**paper)


def _mlp(dims: Sequence[int], dropout: float) -> nn.Sequential:
    """Linear layers with ReLU (and dropout) between them, none after the last."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    for m in layers:
        if isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight)
            nn.init.zeros_(m.bias)
    return nn.Sequential(*layers)


@torch.no_grad()
def sinkhorn_codes(dist: torch.Tensor, epsilon: float, n_iters: int) -> torch.Tensor:
    """Balanced assignment of a batch to codes from distances ``[B, K]``.

    Distances are rescaled to [-1, 1] (as in the reference, so ``epsilon`` has the
    same meaning), then Sinkhorn–Knopp alternately makes every item's mass and every
    code's mass equal.  It runs in float64 and in the log domain, where
    ``exp(-d / 0.003)`` would otherwise overflow.  Returns the argmax code per item.
    """
    d = dist.double()
    lo, hi = d.min(), d.max()
    d = (d - (hi + lo) / 2) / ((hi - lo) / 2 + 1e-5)
    log_q = -d / epsilon
    for _ in range(n_iters):
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True)  # each item: equal mass
        log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True)  # each code: equal mass
    return log_q.argmax(dim=1)


class ResidualQuantizer(nn.Module):
    """``len(codebook_sizes)`` codebooks applied to successive residuals."""

    def __init__(self, codebook_sizes: Sequence[int], e_dim: int):
        super().__init__()
        self.codebooks = nn.ParameterList(
            [nn.Parameter(torch.empty(k, e_dim).uniform_(-1.0 / k, 1.0 / k)) for k in codebook_sizes]
        )

    @staticmethod
    def _sq_dist(r: torch.Tensor, cb: torch.Tensor) -> torch.Tensor:
        return r.pow(2).sum(1, keepdim=True) - 2 * r @ cb.t() + cb.pow(2).sum(1)[None, :]

    def forward(
        self, z: torch.Tensor, beta: float, sinkhorn_epsilon: float = 0.0, sinkhorn_iters: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (straight-through z_q, codes [B, L], quantisation loss)."""
        residual, z_q = z, torch.zeros_like(z)
        codes, losses = [], []
        last = len(self.codebooks) - 1
        for level, cb in enumerate(self.codebooks):
            dist = self._sq_dist(residual.detach(), cb.detach())
            if level == last and sinkhorn_epsilon > 0 and self.training:
                idx = sinkhorn_codes(dist, sinkhorn_epsilon, sinkhorn_iters)
            else:
                idx = dist.argmin(dim=1)
            q = cb[idx]
            # codebook term pulls codewords to residuals; commitment pulls residuals to codewords
            losses.append(F.mse_loss(q, residual.detach()) + beta * F.mse_loss(q.detach(), residual))
            q_st = residual + (q - residual).detach()
            # value r - q; the straight-through path makes the next residual gradient-free, so
            # z receives the decoder gradient exactly once (through the sum below)
            residual = residual - q_st
            z_q = z_q + q_st
            codes.append(idx)
        return z_q, torch.stack(codes, dim=1), torch.stack(losses).mean()


class RQVAE(nn.Module):
    """MLP encoder + residual quantizer + MLP decoder; ``encode`` gives int codes."""

    def __init__(self, config: RQVAEConfig):
        super().__init__()
        if config.in_dim is None:
            raise InputError("RQVAEConfig.in_dim must be set (train_rqvae sets it from the data)")
        self.config = config
        dims = [config.in_dim, *config.hidden_dims, config.e_dim]
        self.encoder = _mlp(dims, config.dropout)
        self.decoder = _mlp(dims[::-1], config.dropout)
        self.quantizer = ResidualQuantizer(config.codebook_sizes, config.e_dim)
        self.register_buffer("input_scale", torch.ones(()))

    def forward(self, x: torch.Tensor, use_sinkhorn: bool = True) -> dict[str, torch.Tensor]:
        x = x * self.input_scale
        z = self.encoder(x)
        cfg = self.config
        eps = cfg.sinkhorn_epsilon if use_sinkhorn else 0.0
        z_q, codes, quant_loss = self.quantizer(z, cfg.commitment_beta, eps, cfg.sinkhorn_iters)
        x_hat = self.decoder(z_q)
        recon_loss = F.mse_loss(x_hat, x)
        loss = recon_loss + cfg.quant_weight * quant_loss
        return {"loss": loss, "recon_loss": recon_loss, "quant_loss": quant_loss, "codes": codes}

    @property
    def device(self) -> torch.device:
        return self.input_scale.device

    @torch.no_grad()
    def encode(self, embeddings: np.ndarray | torch.Tensor, batch_size: int = 8192) -> np.ndarray:
        """Argmin codes (no Sinkhorn), int64 ``[n_items, n_levels]``."""
        x = torch.as_tensor(check_finite(np.asarray(embeddings)) if not torch.is_tensor(embeddings) else embeddings)
        if x.shape[1] != self.config.in_dim:
            raise InputError(f"embeddings have dim {x.shape[1]}, the RQ-VAE expects {self.config.in_dim}")
        was_training = self.training
        self.eval()
        out = []
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size].to(self.device, torch.float32) * self.input_scale
            _, codes, _ = self.quantizer(self.encoder(xb), self.config.commitment_beta)
            out.append(codes.cpu())
        self.train(was_training)
        return torch.cat(out).numpy().astype(np.int64)


# ---------------------------------------------------------------------------- training


@dataclass
class RQVAETrainResult:
    """Best model (lowest collision rate, loaded and in eval mode) and the curves."""

    model: RQVAE
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_collision_rate: float = float("nan")
    train_seconds: float = 0.0


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.no_grad()
def _kmeans_init(model: RQVAE, x: torch.Tensor, seed: int, niter: int) -> None:
    """Set each codebook to residual k-means centroids of the encoder output of all items."""
    z = torch.cat([model.encoder(x[i : i + 8192] * model.input_scale) for i in range(0, len(x), 8192)])
    sizes = model.config.codebook_sizes
    # Codebooks larger than the catalog keep their random init beyond the first n_items rows.
    result = rqkmeans(z.cpu().numpy(), len(sizes), sizes, seed=seed, sample_iters=niter, sample_points_per_centroid=256,
                      full_iters=0, refine_iters=0, balance_last_level=False)
    for cb, centroids in zip(model.quantizer.codebooks, result.centroids):
        cb.data[: len(centroids)] = torch.from_numpy(centroids).to(cb.device)


@torch.no_grad()
def _restart_dead_codes(model: RQVAE, x: torch.Tensor, counts: list[torch.Tensor], gen: torch.Generator) -> int:
    """Move every unused codeword onto the residual of a random item at its level.

    A codeword that no item picks gets no gradient and stays dead forever; with the
    encoder drifting early in training, most of a codebook can die that way and the
    collision rate stays high for thousands of epochs.  Returns the number restarted.
    """
    sample = torch.randperm(len(x), generator=gen)[: min(len(x), 4096)].to(x.device)
    residual = model.encoder(x[sample] * model.input_scale)
    n_restarted = 0
    for cb, used in zip(model.quantizer.codebooks, counts):
        dead = torch.nonzero(used == 0).squeeze(1)
        if len(dead):
            pick = torch.randint(len(residual), (len(dead),), generator=gen).to(x.device)
            cb.data[dead] = residual[pick]
            n_restarted += len(dead)
        residual = residual - cb[ResidualQuantizer._sq_dist(residual, cb).argmin(1)]
    return n_restarted


def _evaluate(model: RQVAE, x: torch.Tensor) -> dict[str, float]:
    codes = model.encode(x)
    stats = level_stats(codes, model.config.codebook_sizes)
    out = {"collision_rate": collision_rate(codes)}
    for level, (u, h) in enumerate(zip(stats["usage"], stats["entropy"])):
        out[f"usage_level_{level}"] = u
        out[f"entropy_level_{level}"] = h
    return out


def train_rqvae(
    embeddings: np.ndarray,
    config: RQVAEConfig | dict | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    progress: bool = True,
) -> RQVAETrainResult:
    """Train an RQ-VAE on ``embeddings [n_items, dim]`` and keep the least-colliding state.

    Args:
        config: :class:`RQVAEConfig` or a dict of its fields (``in_dim`` is set here).
        seed: seeds initialisation, k-means init and batch order; the caller's global
            torch RNG state is left untouched.
        device: ``"cpu"``, ``"cuda"``...; default CUDA when available.
        on_epoch: called after every epoch (0-based) with float metrics ``loss``,
            ``recon_loss``, ``quant_loss`` (epoch means), ``restarted_codes`` (when
            restarting dead codes) and, on evaluation epochs
            (epoch 0, every ``eval_every``-th, and the last), ``collision_rate`` and
            ``usage_level_<l>`` / ``entropy_level_<l>`` of the argmin codes.
        progress: show a tqdm bar over epochs.
    """
    if isinstance(config, dict):
        config = RQVAEConfig.from_dict(config)
    x_np = check_finite(embeddings)
    config = replace(config or RQVAEConfig(), in_dim=int(x_np.shape[1]))
    dev = _resolve_device(device)
    x = torch.from_numpy(x_np).to(dev)
    n = len(x)

    history: list[dict] = []
    best_state, best_epoch, best_key = None, -1, (float("inf"), float("inf"))
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        model = RQVAE(config).to(dev)
        if config.normalize_input:
            model.input_scale.fill_(1.0 / max(float(x.std()), 1e-12))
        if config.kmeans_init:
            model.eval()
            _kmeans_init(model, x, seed, config.kmeans_iters)
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        gen = torch.Generator().manual_seed(seed)

        bar = tqdm(range(config.epochs), desc="rq-vae", disable=not progress, dynamic_ncols=True)
        for epoch in bar:
            model.train()
            sums = {k: torch.zeros((), device=dev) for k in ("loss", "recon_loss", "quant_loss")}
            counts = [torch.zeros(k, dtype=torch.long, device=dev) for k in config.codebook_sizes]
            perm = torch.randperm(n, generator=gen).to(dev)
            for start in range(0, n, config.batch_size):
                out = model(x[perm[start : start + config.batch_size]])
                opt.zero_grad(set_to_none=True)
                out["loss"].backward()
                opt.step()
                w = min(config.batch_size, n - start) / n
                for k in sums:  # accumulate on the device: no host sync per step
                    sums[k] += out[k].detach() * w
                for level, c in enumerate(counts):
                    c += torch.bincount(out["codes"][:, level], minlength=len(c))
            metrics = {k: float(v) for k, v in sums.items()}
            if config.restart_dead_codes and epoch < config.epochs - 1:
                metrics["restarted_codes"] = float(_restart_dead_codes(model, x, counts, gen))
            if epoch == 0 or (epoch + 1) % config.eval_every == 0 or epoch == config.epochs - 1:
                metrics.update(_evaluate(model, x))
                key = (metrics["collision_rate"], metrics["recon_loss"])
                if key < best_key:
                    best_key, best_epoch = key, epoch
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", coll=f"{metrics['collision_rate']:.4f}")
            history.append({"epoch": epoch, **metrics})
            if on_epoch is not None:
                on_epoch(epoch, metrics)

    model.load_state_dict(best_state)
    model.eval()
    return RQVAETrainResult(
        model=model,
        history=history,
        best_epoch=best_epoch,
        best_collision_rate=best_key[0],
        train_seconds=time.perf_counter() - t0,
    )


# ---------------------------------------------------------------------------- save / load


def save_rqvae(model: RQVAE, path: str | Path) -> Path:
    """Write ``config.json`` + ``model.pt`` (a plain state_dict) into directory ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG_NAME).write_text(json.dumps(model.config.to_dict(), indent=2))
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path / WEIGHTS_NAME)
    return path


def load_rqvae(path: str | Path, device: str | torch.device = "cpu") -> RQVAE:
    """Inverse of :func:`save_rqvae`; the model is returned in eval mode."""
    path = Path(path)
    if not (path / CONFIG_NAME).is_file() or not (path / WEIGHTS_NAME).is_file():
        raise InputError(f"{path} is not an RQ-VAE checkpoint (needs {CONFIG_NAME} and {WEIGHTS_NAME})")
    config = RQVAEConfig.from_dict(json.loads((path / CONFIG_NAME).read_text()))
    model = RQVAE(config)
    model.load_state_dict(torch.load(path / WEIGHTS_NAME, map_location="cpu", weights_only=True))
    return model.to(device).eval()
