"""Process-group setup shared by in-process training and the launched (multi-GPU) entry point.

On a CPU-only machine DeepSpeed runs with its CPU accelerator and gloo in one process; it still needs the
usual rendezvous variables, otherwise it falls back to MPI discovery (and fails without mpi4py).  When a
launcher (``deepspeed``, ``torchrun``) started the process, those variables are already set and kept.
The first ``deepspeed.initialize`` on CPU JIT-compiles a small comm extension (slow, once): it is cached in
``TORCH_EXTENSIONS_DIR``, which defaults to a persistent per-user folder.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

RENDEZVOUS_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                   "GROUP_RANK", "ROLE_RANK", "ROLE_WORLD_SIZE", "TORCHELASTIC_RUN_ID")  # fmt: skip


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def free_port() -> int:
    """A TCP port that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def default_extensions_dir() -> str:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return str(cache / "seqrec_pipeline" / "torch_extensions")


def launcher_free_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``env`` (default: this process's) without rendezvous variables, for a child process that
    must set up its own process group (inheriting this process's MASTER_PORT would collide with it)."""
    env = dict(os.environ if env is None else env)
    for name in RENDEZVOUS_VARS:
        env.pop(name, None)
    return env


def setup_distributed(quiet: bool = True) -> DistInfo:
    """Initialise (once per process) the process group DeepSpeed uses; returns this rank's info.

    Sets, only where absent: ``DS_ACCELERATOR=cpu`` (no CUDA), ``TORCH_EXTENSIONS_DIR``, and the
    single-process rendezvous ``RANK=0 LOCAL_RANK=0 WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=<free>``.
    A process that no launcher started listens on the loopback interface only
    (:func:`_loopback_process_group`); launched ranks use the launcher's ``env://`` rendezvous.
    """
    cuda = torch.cuda.is_available()
    if not cuda:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # read when deepspeed is first imported
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", default_extensions_dir())
    single = not any(name in os.environ for name in RENDEZVOUS_VARS)  # no launcher started this process
    for name, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}.items():
        os.environ.setdefault(name, value)
    if "MASTER_PORT" not in os.environ and not single:
        os.environ["MASTER_PORT"] = str(free_port())

    import deepspeed  # late: the environment above must be in place first

    if quiet:
        # DeepSpeed logs its whole config and every engine detail at INFO; keep warnings and errors.
        deepspeed.utils.logger.setLevel(logging.WARNING)
    backend = "nccl" if cuda else "gloo"
    if not torch.distributed.is_initialized():
        if single:
            _loopback_process_group(backend)
        # on an initialised group DeepSpeed only wraps it
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=not quiet)
    local_rank = int(os.environ["LOCAL_RANK"])
    if cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    return DistInfo(
        rank=torch.distributed.get_rank(),
        local_rank=local_rank,
        world_size=torch.distributed.get_world_size(),
        device=device,
        backend=torch.distributed.get_backend(),
    )


def _loopback_process_group(backend: str) -> None:
    """The one-process group, with its c10d store listening on 127.0.0.1 only.

    ``init_process_group`` with ``env://`` makes rank 0's TCPStore listen on every interface, whatever
    ``MASTER_ADDR`` says; here the store gets a socket already bound to 127.0.0.1 (``MASTER_PORT`` if set,
    else a free port; binding it here also closes the race of picking a port and binding it later).  gloo's own
    listening socket goes to the loopback interface as well (``GLOO_SOCKET_IFNAME``, unless set).
    """
    if "lo" in {name for _, name in socket.if_nameindex()}:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    listener = socket.create_server(("127.0.0.1", int(os.environ.get("MASTER_PORT", 0))))
    port = listener.getsockname()[1]
    os.environ["MASTER_PORT"] = str(port)
    store = torch.distributed.TCPStore("127.0.0.1", port, world_size=1, is_master=True, wait_for_workers=False,
                                       master_listen_fd=listener.detach())  # the store owns the socket now
    torch.distributed.init_process_group(backend, store=store, rank=0, world_size=1)


def barrier() -> None:
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.barrier()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a few scalars over ranks (one collective; a no-op copy on one process)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.all_reduce(tensor)
    return tensor.tolist()


def broadcast_from_main(value: float, device: torch.device) -> float:
    """Rank 0's value on every rank (keeps early-stopping decisions identical across ranks)."""
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.broadcast(tensor, src=0)
    return float(tensor.item())
