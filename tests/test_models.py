"""One contract test over the whole model registry (fit → predict → save → load → same)."""

import numpy as np
import pytest

from quant_cli.errors import ModelError
from quant_cli.models.registry import MODELS, create_model, model_class


def tiny_problem(seed=0, n=400, k=6):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, k))
    y = 0.5 * X[:, 0] - 0.3 * X[:, 1] + rng.normal(scale=0.5, size=n)
    return X, y


@pytest.mark.parametrize("name", sorted(MODELS))
def test_contract(name, tmp_path):
    X, y = tiny_problem()
    names = [f"f{i}" for i in range(X.shape[1])]
    model = create_model(name, "regression", {}, seed=1, threads=1)
    assert not model.is_fitted()
    with pytest.raises(ModelError, match="not fitted"):
        model.predict(X)
    assert model.fit(X[:300], y[:300], feature_names=names, X_val=X[300:], y_val=y[300:], early_stopping=10) is model
    before = model.predict(X)
    assert before.shape == (len(X),) and np.isfinite(before).all()
    assert np.corrcoef(before, y)[0, 1] > 0.3  # it learned the planted relation
    model.save(tmp_path / "m")
    loaded = model_class(name).load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict(X), before)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_same_seed_same_predictions(name):
    X, y = tiny_problem()
    names = [f"f{i}" for i in range(X.shape[1])]
    runs = [create_model(name, "regression", {}, seed=3, threads=1).fit(X, y, feature_names=names).predict(X) for _ in range(2)]
    np.testing.assert_array_equal(runs[0], runs[1])


def test_unknown_model_and_param_are_named():
    with pytest.raises(ModelError, match=r"model.name 'lightgbn' is not a registered model \(did you mean 'lightgbm'\?\)"):
        model_class("lightgbn")
    with pytest.raises(ModelError, match=r"model.params.num_leafs is not a parameter of model 'lightgbm' \(did you mean 'num_leaves'\?\)"):
        create_model("lightgbm", "regression", {"num_leafs": 3}, seed=1, threads=1)
