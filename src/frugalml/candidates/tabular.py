"""The built-in tabular ladder, thinnest first. Each entry is an ordinary registration."""

from __future__ import annotations


from . import register_candidate

CLS, REG = ("classification",), ("regression",)


def _dummy(task, seed):
    from sklearn.dummy import DummyClassifier, DummyRegressor

    return DummyClassifier(strategy="prior") if task == "classification" else DummyRegressor(strategy="mean")


def _linear(task, seed):
    from sklearn.linear_model import LogisticRegression, Ridge

    return LogisticRegression(max_iter=2000) if task == "classification" else Ridge(alpha=1.0)


def _naive_bayes(task, seed):
    from sklearn.naive_bayes import GaussianNB

    return GaussianNB()


def _tree(task, seed):
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    cls = DecisionTreeClassifier if task == "classification" else DecisionTreeRegressor
    return cls(max_depth=4, min_samples_leaf=5, random_state=seed)


def _knn(task, seed):
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

    cls = KNeighborsClassifier if task == "classification" else KNeighborsRegressor
    return cls(n_neighbors=15, weights="uniform")


def _forest(task, seed):
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    cls = RandomForestClassifier if task == "classification" else RandomForestRegressor
    return cls(n_estimators=100, min_samples_leaf=2, n_jobs=1, random_state=seed)


def _hgb(task, seed):
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    cls = HistGradientBoostingClassifier if task == "classification" else HistGradientBoostingRegressor
    return cls(max_iter=200, early_stopping=False, random_state=seed)


def _lightgbm(task, seed):
    import lightgbm as lgb

    cls = lgb.LGBMClassifier if task == "classification" else lgb.LGBMRegressor
    return cls(n_estimators=200, learning_rate=0.05, num_leaves=31, n_jobs=1, random_state=seed, verbose=-1)


def _mlp(task, seed):
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    cls = MLPClassifier if task == "classification" else MLPRegressor
    return cls(hidden_layer_sizes=(128, 64), early_stopping=True, max_iter=300, random_state=seed)


def _torch_mlp(task, seed):
    from .torch_mlp import TorchMLPClassifier, TorchMLPRegressor

    cls = TorchMLPClassifier if task == "classification" else TorchMLPRegressor
    return cls(hidden_layer_sizes=(128, 64), seed=seed)


register_candidate("dummy", _dummy, family="baseline", interpretable=True, rank=0)
register_candidate("linear", _linear, family="linear", interpretable=True, rank=10)
register_candidate("naive_bayes", _naive_bayes, family="naive_bayes", interpretable=True, tasks=CLS, rank=20)
register_candidate("decision_tree", _tree, family="tree", interpretable=True, rank=30, scale=False)
register_candidate("knn", _knn, family="neighbors", rank=40)
register_candidate("random_forest", _forest, family="forest", rank=50, scale=False)
register_candidate("hist_gradient_boosting", _hgb, family="boosting", rank=60, scale=False)
register_candidate("lightgbm", _lightgbm, family="boosting", rank=70, scale=False)
register_candidate("mlp", _mlp, family="neural", rank=80)
# needs torch (an optional extra): on the default ladder when torch is installed
register_candidate("torch_mlp", _torch_mlp, family="neural", rank=85, needs=("torch", "safetensors"),
                   extra="torch")
