"""All distributed plumbing lives here.

Every helper works without a process group (a plain ``python -m dist_data.<verb>`` run): it then
returns its input unchanged, so library code never branches on "am I distributed".

Ranks and world size are read from torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``); the device is chosen by ``LOCAL_RANK``, never by the global rank.
"""

from __future__ import annotations

import datetime
import os
import pickle
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist

from .errors import BadRowError, InputError


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def init(timeout_minutes: int = 120) -> DistInfo:
    """Initialise the process group from torchrun's environment (idempotent).

    nccl when CUDA is available, gloo otherwise. The long timeout lets rank 0 build an index or
    merge outputs while the others wait at a barrier.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if torch.cuda.is_available():
        gpus, local_world = torch.cuda.device_count(), _env_int("LOCAL_WORLD_SIZE", 1)
        if local_world > gpus:  # nccl takes one rank per device; two ranks on one GPU fail obscurely
            raise InputError(f"{local_world} ranks on this node but {gpus} CUDA device(s): run one rank per GPU "
                             f"(--nproc-per-node={gpus}), or CPU ranks with CUDA_VISIBLE_DEVICES=''")
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        timeout = datetime.timedelta(minutes=timeout_minutes)
        # torchrun --max-restarts: the ranks of a restart meet under their own prefix of the job's store,
        # never at the addresses the ranks of an earlier attempt left there (a lost rank's)
        store, _, _ = next(dist.rendezvous("env://", rank, world_size, timeout=timeout))
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or "0"
        dist.init_process_group(
            backend=backend,
            timeout=timeout,
            store=dist.PrefixStore(f"dist_data/attempt_{restart}", store),
            rank=rank,
            world_size=world_size,
            **({"device_id": device} if backend == "nccl" else {}),
        )
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def process_group(timeout_minutes: int = 120) -> Iterator[DistInfo]:
    """``with process_group() as info:`` — init, then teardown in ``finally``.

    After a normal end every rank waits for the others before tearing down, so no rank closes its
    connections while another is still writing (after an error there is no barrier: the others
    may never arrive).
    """
    info = init(timeout_minutes)
    finished = False
    try:
        yield info
        finished = True
    finally:
        if finished:
            barrier()
        teardown()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shard_range(n: int, rank: int, world_size: int, unit: int = 1) -> tuple[int, int]:
    """Contiguous slice ``[start, end)`` of ``n`` items for ``rank``.

    Items are dealt in whole ``unit``s (e.g. embedding blocks), so that shard boundaries never split
    a unit and concatenating the shards in rank order gives back ``range(n)``. Earlier ranks get
    the extra units when they do not divide evenly.

    >>> [shard_range(10, r, 3) for r in range(3)]
    [(0, 4), (4, 7), (7, 10)]
    """
    if n < 0 or world_size < 1 or not 0 <= rank < world_size or unit < 1:
        raise ValueError(f"bad shard_range arguments n={n} rank={rank} world_size={world_size} unit={unit}")
    n_units = -(-n // unit)
    base, extra = divmod(n_units, world_size)
    first = rank * base + min(rank, extra)
    count = base + (1 if rank < extra else 0)
    return min(first * unit, n), min((first + count) * unit, n)


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _padded(array: np.ndarray) -> tuple[list[int], torch.Tensor]:
    """Every rank's row count (one collective) and this rank's rows as raw bytes padded to the
    largest count, so that any dtype (float16, structured hashes, ...) travels unchanged."""
    device = _comm_device()
    size = torch.tensor([array.shape[0]], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    row_bytes = array.dtype.itemsize * int(np.prod(array.shape[1:], dtype=np.int64))
    padded = np.zeros((max(counts), row_bytes), dtype=np.uint8)
    if array.shape[0]:
        padded[: array.shape[0]] = array.reshape(array.shape[0], -1).view(np.uint8).reshape(array.shape[0], row_bytes)
    return counts, torch.from_numpy(padded).to(device)


def _unpadded(received: list[torch.Tensor], counts: list[int], like: np.ndarray) -> np.ndarray:
    flat = np.concatenate([r[:c].cpu().numpy() for r, c in zip(received, counts)], axis=0)
    return flat.view(like.dtype).reshape((sum(counts),) + like.shape[1:])


def all_gather_array(array: np.ndarray) -> np.ndarray:
    """Concatenate ``array`` (rows may differ per rank) from all ranks, in rank order.

    One collective for the sizes, one for the padded data: never a loop of per-row calls.
    Trailing dimensions and dtype must agree across ranks.
    """
    if not is_distributed():
        return array
    array = np.ascontiguousarray(array)
    counts, send = _padded(array)
    received = [torch.empty_like(send) for _ in counts]
    dist.all_gather(received, send)
    return _unpadded(received, counts, array)


def gather_array(array: np.ndarray, dst: int = 0) -> np.ndarray | None:
    """:func:`all_gather_array` onto rank ``dst`` only (the others get None): for results one rank
    writes, so the whole array is held once per job instead of once per rank."""
    if not is_distributed():
        return array
    array = np.ascontiguousarray(array)
    counts, send = _padded(array)
    received = [torch.empty_like(send) for _ in counts] if dist.get_rank() == dst else None
    dist.gather(send, received, dst=dst)
    return _unpadded(received, counts, array) if received is not None else None


def all_gather_object(obj: Any) -> list[Any]:
    """Small picklable metadata from every rank (counts, errors, stats), in rank order."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def count_before(n: int) -> int:
    """The sum of ``n`` over the ranks before this one: where this rank's part of a numbering that
    runs through the ranks in order starts. Collective."""
    return int(sum(all_gather_object(int(n))[: get_rank()]))


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not is_distributed():
        return obj
    box = [obj if dist.get_rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_max(value: int) -> int:
    return max(all_gather_object(value))


def raise_if_any_failed(error: BaseException | None) -> None:
    """Make every rank raise when any rank failed, instead of leaving the others at a collective.

    Each rank passes its own exception (or None); the first failing rank's error is re-raised
    everywhere, so the run exits non-zero with one clear message.
    """
    errors = all_gather_object(None if error is None else pickle.dumps(error))
    for blob in errors:
        if blob is not None:
            raise pickle.loads(blob)


@contextmanager
def same_error_on_every_rank(*kinds: type[BaseException]) -> Iterator[None]:
    """Run the block; a user error of ``kinds`` (default: a bad input or a bad row) raised on any
    rank is raised on every rank after it (:func:`raise_if_any_failed`), so no rank waits at a
    collective for one that stopped. Collective."""
    error = None
    try:
        yield
    except (kinds or (BadRowError, InputError)) as e:
        error = e
    raise_if_any_failed(error)


def exchange(send: list[np.ndarray]) -> list[np.ndarray]:
    """Personalised all-to-all: ``send[r]`` goes to rank ``r``; returns what each rank sent here.

    Arrays may differ in length but share dtype and trailing dimensions (raw bytes travel, so any
    dtype works). Two collectives: the sizes, then the data.
    """
    if not is_distributed():
        return [send[0]]
    world = dist.get_world_size()
    if len(send) != world:
        raise ValueError(f"exchange needs one array per rank ({world}), got {len(send)}")
    proto = send[0]
    tail, dtype = proto.shape[1:], proto.dtype
    row_bytes = dtype.itemsize * int(np.prod(tail, dtype=np.int64))
    device = _comm_device()
    flat = [np.ascontiguousarray(a, dtype=dtype).reshape(-1).view(np.uint8) for a in send]
    out_sizes = torch.empty(world, dtype=torch.int64, device=device)
    dist.all_to_all_single(out_sizes, torch.tensor([len(f) for f in flat], dtype=torch.int64, device=device))
    recv_sizes = out_sizes.cpu().tolist()
    data = torch.from_numpy(np.concatenate(flat) if flat else np.zeros(0, np.uint8)).to(device)
    recv = torch.empty(sum(recv_sizes), dtype=torch.uint8, device=device)
    dist.all_to_all_single(recv, data, output_split_sizes=recv_sizes, input_split_sizes=[len(f) for f in flat])
    raw = recv.cpu().numpy()
    parts, start = [], 0
    for size in recv_sizes:
        chunk = raw[start : start + size]
        parts.append(chunk.view(dtype).reshape((size // max(row_bytes, 1),) + tail))
        start += size
    return parts


def route(values: np.ndarray, dest: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Send each row of ``values`` to rank ``dest[row]`` (all-to-all). Returns the send order and
    what every rank sent here (in rank order); replies in that order go back with :func:`unroute`."""
    order, split = _send_order(dest)
    return order, exchange([values[order[split[r] : split[r + 1]]] for r in range(len(split) - 1)])


def _send_order(dest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows in the order they are sent (by destination rank, stable) and each rank's slice bounds."""
    order = np.argsort(dest, kind="stable")
    return order, np.searchsorted(np.asarray(dest)[order], np.arange(get_world_size() + 1))


def unroute(order: np.ndarray, received: list[np.ndarray], replies: np.ndarray) -> np.ndarray:
    """The inverse of :func:`route`: ``replies`` (one row per received row, in received order) go
    back to their senders; returns this rank's answers in its original row order."""
    bounds = np.cumsum([0] + [len(r) for r in received])
    back = exchange([replies[bounds[i] : bounds[i + 1]] for i in range(len(received))])
    out = np.empty((len(order),) + replies.shape[1:], dtype=replies.dtype)
    out[order] = np.concatenate(back) if back else replies[:0]
    return out


def fetch(want: np.ndarray, owner: np.ndarray, serve: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """The values of keys held by other ranks: each key's owner is asked for it (all-to-all).

    Args:
        want: ``(n,) int64`` keys this rank needs; owner: ``(n,)`` the rank that holds each.
        serve: ``serve(keys) -> np.ndarray`` on the owner, the values of its own keys (one row each).

    Returns:
        ``(n, ...)`` the values, in the order of ``want``.
    """
    order, asked = route(np.asarray(want, dtype=np.int64), owner)
    return unroute(order, asked, np.concatenate([np.asarray(serve(keys)) for keys in asked]))


def route_strings(texts: Sequence[str], dest: np.ndarray) -> list[str]:
    """:func:`route` for texts: each goes to rank ``dest[i]``; returns what every rank sent here, in
    the order of :func:`route`'s received rows for the same ``dest``."""
    order, split = _send_order(dest)
    encoded = [[texts[i].encode("utf-8") for i in order[split[r] : split[r + 1]].tolist()]
               for r in range(len(split) - 1)]
    return _decode(exchange([np.array([len(b) for b in e], dtype=np.int64) for e in encoded]),
                   exchange([np.frombuffer(b"".join(e), dtype=np.uint8) for e in encoded]))


def _decode(lengths: list[np.ndarray], blobs: list[np.ndarray]) -> list[str]:
    got: list[str] = []
    for lens, blob in zip(lengths, blobs):
        raw, ends = blob.tobytes(), np.cumsum(lens)
        got.extend(raw[e - n : e].decode("utf-8") for n, e in zip(lens.tolist(), ends.tolist()))
    return got


def fetch_strings(want: np.ndarray, owner: np.ndarray, serve: Callable[[np.ndarray], list[str]]) -> list[str]:
    """:func:`fetch` for text values: ``serve(keys)`` returns one string per key."""
    order, asked = route(np.asarray(want, dtype=np.int64), owner)
    encoded = [[s.encode("utf-8") for s in serve(keys)] for keys in asked]
    got = _decode(exchange([np.array([len(b) for b in e], dtype=np.int64) for e in encoded]),
                  exchange([np.frombuffer(b"".join(e), dtype=np.uint8) for e in encoded]))
    out: list[str] = [""] * len(order)
    for i, s in zip(order.tolist(), got):
        out[i] = s
    return out
