"""Connected components of a graph whose nodes and edges are spread over the ranks.

Each rank holds a sorted run of node ids (:class:`~dist_data.core.keys.Owners` says which rank
holds which) and some of the edges (those it found: no rank holds them all). Every node ends with
the smallest node id of its component, by min-label propagation with pointer jumping: each round,
every edge proposes the smaller of its two labels to both ends (sent to the ends' ranks), then every
node takes the label of its label. A round is three all-to-alls and the rounds needed grow with the
logarithm of the components' diameter, not with their size; the rounds stop when no label changed
on any rank.
"""

from __future__ import annotations

import numpy as np

from . import distributed
from .keys import Owners

_PROPOSAL = np.dtype([("node", np.int64), ("label", np.int64)])


def connected_components(nodes: np.ndarray, a: np.ndarray, b: np.ndarray, owners: Owners,
                         max_rounds: int = 10_000) -> tuple[np.ndarray, int]:
    """The component label (smallest node id) of each of this rank's ``nodes`` (collective).

    Args:
        nodes: ``(n,) int64`` ascending, the nodes this rank holds.
        a, b: ``(m,)`` this rank's edges; ends anywhere (``owners`` knows where).

    Returns:
        ``(labels (n,), rounds)``.
    """
    nodes = np.asarray(nodes, dtype=np.int64)
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    label = nodes.copy()

    def at(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
        return values[np.searchsorted(nodes, keys)]

    ends = np.concatenate([a, b])
    end_owner = owners.of(ends)
    for rounds in range(1, max_rounds + 1):
        current = label
        got = distributed.fetch(ends, end_owner, lambda keys: at(keys, current))  # collective, even when empty
        la, lb = got[: len(a)], got[len(a):]
        low = np.minimum(la, lb)
        proposal = np.empty(2 * len(a), dtype=_PROPOSAL)
        proposal["node"], proposal["label"] = ends, np.concatenate([low, low])
        _, received = distributed.route(proposal, end_owner)
        here = np.concatenate(received) if received else proposal[:0]
        proposed = label.copy()
        if len(here):
            np.minimum.at(proposed, np.searchsorted(nodes, here["node"]), here["label"])
        jumped = distributed.fetch(proposed, owners.of(proposed),
                                   lambda keys: at(keys, proposed))  # pointer jumping: the label's label
        new = np.minimum(proposed, jumped)
        changed = bool((new != label).any())
        label = new
        if not any(distributed.all_gather_object(changed)):
            return label, rounds
    raise RuntimeError(f"connected components did not settle in {max_rounds} rounds")
