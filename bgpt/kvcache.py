"""Key/value caches for cached generation: one `LayerKV` per attention layer, grouped in a
`KVCache` with each row's fill length, and the `KVPlan` one cached forward shares across its
layers (which rows, which positions, which mask)."""

from __future__ import annotations

import torch


class KVPlan:
    """Where one cached forward reads and writes: computed once by `Transformer.forward` and
    shared by its layers. `rows` selects cache rows (None: all); `start` is each selected row's
    fill length before the call, a Python int when they are all equal (the fast path)."""

    def __init__(
        self, rows: torch.Tensor | None, starts: list[int], t: int, positions: torch.Tensor
    ):
        self.rows, self.t = rows, t
        device = positions.device
        first = starts[0]
        self.start = first if all(s == first for s in starts) else None
        self.end = max(starts) + t  # keys [0, end) cover every selected row
        self.mask = None  # (T, end) or (b, 1, T, end) bool, True = may attend
        if self.start is not None:
            self.pos = positions[first : first + t]  # (T,)
            if first and t > 1:  # several new positions after a prefix: causal, offset by it
                self.mask = torch.ones(t, self.end, dtype=torch.bool, device=device).tril(first)
        else:  # ragged rows: per-row positions and masks
            start = torch.tensor(starts, device=device)
            self.pos = start[:, None] + positions[:t]  # (b, T)
            self.mask = (positions[: self.end] <= self.pos[:, :, None]).unsqueeze(1)
        self.causal = self.start == 0 and t > 1


class LayerKV:
    """Key/value cache of one attention layer: preallocated (B, heads, T_max, head_dim).

    Rows fill independently: a forward may touch a subset of rows, and rows may hold
    different numbers of positions (the lengths live in the `KVCache` holding the layers)."""

    def __init__(self, batch: int, heads: int, max_len: int, head_dim: int, device, dtype):
        # zeros, not empty: masked-out keys must not hold NaN (0 * NaN poisons the sum)
        self.k = torch.zeros(batch, heads, max_len, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        self.plan: KVPlan | None = None

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new (b, heads, T, hd) keys/values at each row's length; return the keys and
        values to attend to, (b, heads, end, hd)."""
        p = self.plan
        if p.rows is None and p.start is not None:  # the common case, as plain views
            self.k.narrow(2, p.start, p.t).copy_(k)
            self.v.narrow(2, p.start, p.t).copy_(v)
            return self.k.narrow(2, 0, p.end), self.v.narrow(2, 0, p.end)
        rows = p.rows if p.rows is not None else slice(None)
        if p.start is not None:
            self.k[rows, :, p.start : p.start + p.t] = k
            self.v[rows, :, p.start : p.start + p.t] = v
        else:  # index (b, 1) rows x (b, T) positions -> (b, T, heads, hd)
            r = (
                p.rows[:, None]
                if p.rows is not None
                else torch.arange(len(p.pos), device=k.device)[:, None]
            )
            self.k[r, :, p.pos] = k.transpose(1, 2)
            self.v[r, :, p.pos] = v.transpose(1, 2)
        return self.k[rows, :, : p.end], self.v[rows, :, : p.end]


class KVCache(list):
    """One `LayerKV` per block plus each row's fill length (host side, so that planning a
    step never waits on the device)."""

    def __init__(self, layers: list[LayerKV], batch: int):
        super().__init__(layers)
        self.lens = [0] * batch
        self.max_len = layers[0].k.shape[2]
        self.positions = torch.arange(self.max_len, device=layers[0].k.device)
        self.version = 0
        """Counts the replacements of the layers' tensors (`keep`, `extend`): views of them
        (bgpt.fused) are rebuilt when it moves."""

    @property
    def len(self) -> int:
        """The common fill length (rows all equal)."""
        if any(n != self.lens[0] for n in self.lens):
            raise RuntimeError("rows of this cache have different lengths")
        return self.lens[0]

    def plan(self, t: int, rows: torch.Tensor | None) -> KVPlan:
        starts = self.lens if rows is None else [self.lens[i] for i in rows.tolist()]
        if max(starts) + t > self.max_len:
            raise RuntimeError(f"key/value cache full ({self.max_len} positions)")
        return KVPlan(rows, starts, t, self.positions)

    def advance(self, plan: KVPlan) -> None:
        for i in range(len(self.lens)) if plan.rows is None else plan.rows.tolist():
            self.lens[i] += plan.t

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only these rows (in this order), e.g. to drop finished samples of a batch."""
        for layer in self:
            layer.k, layer.v = layer.k[rows], layer.v[rows]
        self.version += 1
        self.lens = [self.lens[i] for i in rows.tolist()]

    def extend(self, other: KVCache) -> None:
        """Append another cache's rows (same layers and length) after these."""
        for layer, more in zip(self, other, strict=True):
            layer.k, layer.v = torch.cat([layer.k, more.k]), torch.cat([layer.v, more.v])
        self.version += 1
        self.lens = self.lens + other.lens
