"""Symbol encodings for global (multi-symbol) models.

One model trained on many symbols can be told which symbol a row belongs to:

- ``none``      the model sees features only (a pooled model);
- ``one_hot``   one 0/1 column per training symbol, appended after the features;
- ``index``     one column holding the symbol's id (0..n-1), which boosting models treat as a
                categorical feature — never as a number with an order;
- ``embedding`` an id per row passed beside the features, for torch models to learn a vector.

The map symbol → id is fit on the training rows only and saved with the model. A symbol not seen at
training is handled by an explicit policy: ``error`` (refuse, naming the symbols) or ``neutral``
(the encoding of "no known symbol": an all-zero one-hot row, a missing category, id 0 whose
embedding is pinned to zeros). Ids for known symbols start at 1 so that 0 can mean "unseen".
"""

from __future__ import annotations

from typing import Any

import numpy as np

from quant_cli.errors import ModelError, one_of

KINDS = ("none", "one_hot", "index", "embedding")
UNSEEN_POLICIES = ("error", "neutral")
UNSEEN = 0  # the id of a symbol not seen at training (neutral policy)
# A dense one-hot block beyond this many cells (2 GB of float64) is refused with a pointer to the
# encodings that scale: better a clear error than the machine running out of memory.
ONE_HOT_MAX_CELLS = 250_000_000


def check_choice(key: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ModelError(f"{key} {value!r} is not supported; allowed: {one_of(allowed)}")
    return value


class SymbolEncoder:
    """Fit on training symbols; encode any rows later with the same map."""

    def __init__(self, kind: str = "none", unseen: str = "error") -> None:
        self.kind = check_choice("model.symbol_encoding", kind, KINDS)
        self.unseen = check_choice("model.unseen_symbols", unseen, UNSEEN_POLICIES)

    def fit(self, symbols: np.ndarray | None) -> SymbolEncoder:
        if self.kind != "none" and symbols is None:
            raise ModelError(
                f"model.symbol_encoding {self.kind!r} needs the symbol of every training row; pass symbols="
            )
        self.symbols_ = [] if self.kind == "none" else sorted({str(s) for s in symbols})
        self.ids_ = {s: i + 1 for i, s in enumerate(self.symbols_)}
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "symbols_"):
            raise ModelError("symbol encoder is not fitted; fit the model first")

    def columns(self) -> list[str]:
        """Names of the columns `transform` appends after the features."""
        self._check_fitted()
        if self.kind == "one_hot":
            return [f"symbol={s}" for s in self.symbols_]
        return ["symbol"] if self.kind == "index" else []

    def ids(self, symbols: np.ndarray | None) -> np.ndarray | None:
        """(n,) int64 ids: 1..n_symbols for training symbols, UNSEEN (0) for others."""
        self._check_fitted()
        if self.kind == "none":
            return None
        if symbols is None:
            raise ModelError(f"model.symbol_encoding {self.kind!r} needs the symbol of every row; pass symbols=")
        names, inverse = np.unique(np.asarray(symbols).astype(str), return_inverse=True)
        lookup = np.array([self.ids_.get(s, UNSEEN) for s in names], dtype=np.int64)
        if self.unseen == "error" and (lookup == UNSEEN).any():
            self._refuse(names[lookup == UNSEEN])
        return lookup[inverse.reshape(-1)]

    def _refuse(self, unseen: np.ndarray) -> None:
        shown = ", ".join(repr(str(s)) for s in unseen[:5]) + (", ..." if len(unseen) > 5 else "")
        raise ModelError(
            f"symbols not seen at training: {shown} ({len(unseen)} in all); the model "
            f"knows {len(self.symbols_)} symbols. "
            'Set model.unseen_symbols = "neutral" to score them with a neutral symbol encoding'
        )

    def transform(self, X: np.ndarray, symbols: np.ndarray | None) -> np.ndarray:
        """Features with the encoding columns appended (one_hot / index); X unchanged otherwise."""
        ids = self.ids(symbols)
        if self.kind == "one_hot":
            if len(ids) * len(self.symbols_) > ONE_HOT_MAX_CELLS:
                raise ModelError(
                    f"model.symbol_encoding 'one_hot' over {len(self.symbols_):,} symbols and {len(ids):,} rows needs "
                    f"{len(ids) * len(self.symbols_) * 8 / 1e9:.1f} GB; use 'index' (boosting) or 'embedding' (mlp)"
                )
            # Column j is symbol j+1; an unseen id 0 matches no column and leaves an all-zero row.
            onehot = (ids[:, None] == np.arange(1, len(self.symbols_) + 1)[None, :]).astype(X.dtype)
            return np.hstack([X, onehot])
        if self.kind == "index":
            # Ids 0..n-1 for the libraries; unseen → NaN, which they treat as a missing category.
            index = np.where(ids == UNSEEN, np.nan, ids - 1.0)
            return np.hstack([X, index[:, None].astype(X.dtype)])
        return X

    def to_json(self) -> dict[str, Any]:
        self._check_fitted()
        return {"kind": self.kind, "unseen": self.unseen, "symbols": self.symbols_}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SymbolEncoder:
        encoder = cls(data["kind"], data["unseen"])
        encoder.symbols_ = list(data["symbols"])
        encoder.ids_ = {s: i + 1 for i, s in enumerate(encoder.symbols_)}
        return encoder
