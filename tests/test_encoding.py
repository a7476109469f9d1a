"""Symbol encodings for global models: the map is fit on training symbols, saved with the model,
and a symbol unseen at training is refused or encoded neutrally — never a crash."""

import numpy as np
import pytest
from helpers import TORCH_FAST, TRAIN_FAST

from quant_cli.errors import ModelError
from quant_cli.io import read_json
from quant_cli.models.encoding import SymbolEncoder
from quant_cli.models.registry import all_models, create_model, load_model

MODELS = all_models()  # every registered model, by name

FEATURES = ["f0", "f1", "f2"]
SYMBOLS = np.array(["AAA", "BBB", "CCC", "DDD"])


def panel(n=480, seed=0):
    """Each symbol has its own level: a pooled model cannot see it, an encoded one can."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    symbols = SYMBOLS[np.arange(n) % 4]
    level = {"AAA": -1.5, "BBB": -0.5, "CCC": 0.5, "DDD": 1.5}
    y = np.array([level[s] for s in symbols]) + 0.3 * X[:, 0] + rng.normal(scale=0.2, size=n)
    return X, y, symbols


# ---- the encoder --------------------------------------------------------------------------------


def test_one_hot_columns_and_neutral_unseen_row():
    enc = SymbolEncoder("one_hot", "neutral").fit(np.array(["B", "A", "B"]))
    assert enc.columns() == ["symbol=A", "symbol=B"]
    out = enc.transform(np.zeros((3, 1)), np.array(["A", "B", "ZZZ"]))
    np.testing.assert_array_equal(out[:, 1:], [[1, 0], [0, 1], [0, 0]])  # unseen: all zeros


def test_index_is_a_category_id_and_unseen_is_missing():
    enc = SymbolEncoder("index", "neutral").fit(np.array(["B", "A"]))
    out = enc.transform(np.zeros((3, 1)), np.array(["A", "B", "ZZZ"]))
    assert enc.columns() == ["symbol"]
    np.testing.assert_array_equal(out[:2, 1], [0.0, 1.0])
    assert np.isnan(out[2, 1])


def test_embedding_ids_reserve_zero_for_unseen():
    enc = SymbolEncoder("embedding", "neutral").fit(np.array(["B", "A"]))
    np.testing.assert_array_equal(enc.ids(np.array(["A", "B", "ZZZ", "A"])), [1, 2, 0, 1])
    assert enc.columns() == []


def test_unseen_symbols_refused_with_a_named_message():
    enc = SymbolEncoder("one_hot", "error").fit(np.array(["A", "B"]))
    with pytest.raises(
        ModelError, match=r"symbols not seen at training: 'NEW' \(1 in all\).*model.unseen_symbols = \"neutral\""
    ):
        enc.transform(np.zeros((2, 1)), np.array(["A", "NEW"]))


def test_none_needs_no_symbols_and_other_kinds_do():
    enc = SymbolEncoder("none").fit(None)
    X = np.ones((2, 2))
    assert enc.transform(X, None) is X and enc.ids(None) is None
    with pytest.raises(ModelError, match="needs the symbol of every training row"):
        SymbolEncoder("one_hot").fit(None)
    with pytest.raises(
        ModelError,
        match=r"model.symbol_encoding 'onehot' is not supported; allowed: 'none', 'one_hot', 'index', 'embedding'",
    ):
        SymbolEncoder("onehot")
    with pytest.raises(ModelError, match=r"model.unseen_symbols 'zero' is not supported; allowed: 'error', 'neutral'"):
        SymbolEncoder("index", "zero")


def test_one_hot_refuses_a_block_that_would_not_fit_in_memory(monkeypatch):
    from quant_cli.models import encoding

    monkeypatch.setattr(encoding, "ONE_HOT_MAX_CELLS", 10)
    enc = SymbolEncoder("one_hot").fit(SYMBOLS)
    with pytest.raises(ModelError, match="use 'index' \\(boosting\\) or 'embedding' \\(mlp\\)"):
        enc.transform(np.zeros((3, 1)), SYMBOLS[:3])


def test_json_round_trip():
    enc = SymbolEncoder("one_hot", "neutral").fit(SYMBOLS)
    again = SymbolEncoder.from_json(enc.to_json())
    X = np.zeros((3, 1))
    rows = np.array(["CCC", "AAA", "NEW"])
    np.testing.assert_array_equal(again.transform(X, rows), enc.transform(X, rows))


# ---- every model × every encoding it declares ------------------------------------------------------

FAST = {
    "lightgbm": {"n_estimators": 60, "min_data_in_leaf": 10},
    "catboost": {"iterations": 60, "depth": 4},
    "xgboost": {"n_estimators": 60, "max_depth": 3},
    "random_forest": {"n_estimators": 20, "min_samples_leaf": 5},
    "extra_trees": {"n_estimators": 20, "min_samples_leaf": 5},
    **TORCH_FAST,
}
TRAIN = {**TRAIN_FAST, "epochs": 30, "learning_rate": 0.01}
# Sequence models share one symbol-encoding module (models/torch/heads.py): one family stands for all.
ENCODED = [
    (name, kind)
    for name, cls in MODELS.items()
    if cls.family != "ensemble" and (not cls.sequence or name == "gru")
    for kind in cls.symbol_encodings
    if kind != "none"
]


def _fit(name, kind, unseen="error"):
    X, y, symbols = panel()
    task = MODELS[name].tasks[0]
    y = y if task == "regression" else np.sign(y)
    model = create_model(
        name,
        task,
        FAST.get(name, {}),
        seed=1,
        threads=1,
        symbol_encoding=kind,
        unseen_symbols=unseen,
        train={**TRAIN, "epochs": 3} if MODELS[name].sequence else TRAIN,
    )  # the symbol must matter, not fit well
    return (
        model.fit(
            X[:400],
            y[:400],
            feature_names=FEATURES,
            symbols=symbols[:400],
            X_val=X[400:],
            y_val=y[400:],
            symbols_val=symbols[400:],
            early_stopping=10,
        ),
        X,
        y,
        symbols,
    )


@pytest.mark.parametrize("name,kind", ENCODED)
def test_encoded_model_uses_the_symbol_and_saves_the_map(name, kind, tmp_path):
    model, X, y, symbols = _fit(name, kind)
    scores = model.predict(X, symbols=symbols)
    swapped = model.predict(X, symbols=SYMBOLS[(np.arange(len(X)) + 2) % 4])
    assert not np.allclose(scores, swapped)  # the symbol changes the prediction
    model.save(tmp_path / "m")
    saved = read_json(tmp_path / "m" / "model.json")
    assert saved["encoder"] == {"kind": kind, "unseen": "error", "symbols": SYMBOLS.tolist()}
    np.testing.assert_array_equal(load_model(tmp_path / "m").predict(X, symbols=symbols), scores)
    if MODELS[name].importance:
        assert set(model.feature_importance()) == set(model.input_names_)


@pytest.mark.parametrize("name,kind", ENCODED)
def test_unseen_symbol_is_refused_or_neutral_never_a_crash(name, kind):
    model, X, *_ = _fit(name, kind, unseen="error")
    with pytest.raises(ModelError, match="symbols not seen at training: 'NEW'"):
        model.predict(X[:5], symbols=np.array(["AAA", "NEW", "AAA", "BBB", "NEW"]))
    model, X, *_ = _fit(name, kind, unseen="neutral")
    symbols = np.array(["AAA", "NEW", "AAA", "BBB", "NEW"])
    if MODELS[name].sequence:  # a window needs seq_len rows of history per symbol: give each symbol 4
        X, symbols = X[:20], np.repeat(np.array(["AAA", "NEW", "BBB", "CCC", "NEW2"]), 4)
    out = model.predict(X[: len(symbols)], symbols=symbols)
    scored = (np.arange(len(symbols)) % 4 == 3) if MODELS[name].sequence else np.ones(len(symbols), bool)
    assert out.shape == (len(symbols),) and np.isfinite(out[scored]).all()


def test_one_hot_linear_recovers_symbol_levels_a_pooled_model_cannot():
    X, y, symbols = panel()
    pooled = create_model("linear", "regression", {}, 1, 1).fit(X[:400], y[:400], feature_names=FEATURES)
    encoded = create_model("linear", "regression", {}, 1, 1, symbol_encoding="one_hot").fit(
        X[:400], y[:400], feature_names=FEATURES, symbols=symbols[:400]
    )
    err_pooled = np.mean((pooled.predict(X[400:]) - y[400:]) ** 2)
    err_encoded = np.mean((encoded.predict(X[400:], symbols=symbols[400:]) - y[400:]) ** 2)
    assert err_encoded < 0.2 * err_pooled


def test_embedding_unseen_row_is_exactly_zero():
    model, X, *_ = _fit("mlp", "embedding", unseen="neutral")
    assert float(model.net_.symbols.table.weight[0].detach().abs().sum()) == 0.0


def test_missing_symbols_are_an_error_not_a_crash():
    X, y, symbols = panel()
    model = create_model("lightgbm", "regression", FAST["lightgbm"], 1, 1, symbol_encoding="index")
    with pytest.raises(ModelError, match="needs the symbol of every training row"):
        model.fit(X, y, feature_names=FEATURES)
    model.fit(X, y, feature_names=FEATURES, symbols=symbols)
    with pytest.raises(ModelError, match="needs the symbol of every row"):
        model.predict(X)
