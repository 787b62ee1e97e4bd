"""Token vocabulary of the generative models (docs/design.md#token-layout).

Layout (ids are contiguous, integers end to end, no string tokens anywhere):

    0                      <pad>
    1                      <bos>   (decoder start for encoder-decoder models)
    2                      <eos>
    3 .. 3+B-1             one token per behavior, in behavior-index order
    then, per SID level l  one token per code 0..level_sizes[l]-1

An item event is the block ``[behavior, c_0, ..., c_{L-1}]`` (the behavior token is
omitted for single-behavior data).  ``level_sizes`` includes the collision
disambiguation level when the SID table has one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

PAD, BOS, EOS = 0, 1, 2
N_SPECIAL = 3


def item_codes(sid_table) -> np.ndarray:
    """The ``(n_items, levels)`` code matrix of a SID table (``item_idx`` and one column per level): row ``i``
    holds item ``i``'s codes, whatever order the table's rows are in."""
    return sid_table.sort("item_idx").drop("item_idx").to_numpy()


@dataclass(frozen=True)
class TokenVocab:
    behaviors: tuple[str, ...]
    level_sizes: tuple[int, ...]
    use_behavior_token: bool = True
    level_offsets: tuple[int, ...] = field(init=False)

    def __post_init__(self):
        if not self.level_sizes or min(self.level_sizes) < 1:
            raise ValueError(f"level_sizes must be positive, got {self.level_sizes}")
        offsets, start = [], N_SPECIAL + len(self.behaviors)
        for size in self.level_sizes:
            offsets.append(start)
            start += int(size)
        object.__setattr__(self, "level_offsets", tuple(offsets))

    @property
    def n_levels(self) -> int:
        return len(self.level_sizes)

    @property
    def block_size(self) -> int:
        """Tokens per item event."""
        return self.n_levels + int(self.use_behavior_token)

    @property
    def size(self) -> int:
        return self.level_offsets[-1] + self.level_sizes[-1]

    def behavior_token(self, behavior: np.ndarray | int) -> np.ndarray | int:
        return N_SPECIAL + np.asarray(behavior) if not isinstance(behavior, int) else N_SPECIAL + behavior

    def code_tokens(self, codes: np.ndarray) -> np.ndarray:
        """codes [..., L] (per-level code indices) -> token ids [..., L]."""
        codes = np.asarray(codes)
        return codes + np.asarray(self.level_offsets, dtype=codes.dtype if codes.dtype.kind == "i" else np.int64)

    def codes_from_tokens(self, tokens: np.ndarray) -> np.ndarray:
        tokens = np.asarray(tokens)
        return tokens - np.asarray(self.level_offsets, dtype=tokens.dtype)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("level_offsets")
        d["behaviors"] = list(self.behaviors)
        d["level_sizes"] = list(self.level_sizes)
        d["special_tokens"] = {"pad": PAD, "bos": BOS, "eos": EOS}
        d["level_offsets"] = list(self.level_offsets)
        d["size"] = self.size
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TokenVocab":
        return cls(tuple(d["behaviors"]), tuple(int(s) for s in d["level_sizes"]), bool(d.get("use_behavior_token", True)))
