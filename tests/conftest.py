import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SCHEMA = Path(__file__).parent / "decision.schema.json"
SHARED_SCHEMA = Path(__file__).resolve().parents[2] / "shared" / "design" / "decision.schema.json"


@pytest.fixture
def fast_cost():
    from frugalml.evaluation import CostConfig

    return CostConfig(latency_calls=60, time_budget_s=0.05, batch_large=200, memory_probe=False)


@pytest.fixture
def validate_decision():
    import jsonschema

    schema = json.loads(SCHEMA.read_text())

    def check(decision: dict) -> None:
        jsonschema.validate(decision, schema)
        # strict JSON: no NaN/Infinity anywhere
        json.loads(json.dumps(decision), parse_constant=lambda c: pytest.fail(f"non-finite number {c}"))

    return check


def linear_data(n=600, seed=0) -> pd.DataFrame:
    """Binary target from a linear rule plus noise: a linear model is as good as anything here."""
    rng = np.random.default_rng(seed)
    x1, x2, x3 = rng.normal(size=(3, n))
    colour = rng.choice(["red", "green", "blue"], size=n)
    logit = 1.5 * x1 - 1.0 * x2 + 0.8 * (colour == "red")
    y = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    region = rng.choice(["north", "south"], size=n)
    return pd.DataFrame({"x1": x1, "x2": x2, "x3": x3, "colour": colour, "region": region, "label": y})


def group_harm_data(n=3000, seed=0) -> pd.DataFrame:
    """Group A (85%) follows a linear rule; group B (15%) an XOR that no linear model can learn.

    Overall a linear model loses only ~0.15 x 0.45 accuracy; inside group B it loses ~0.45.
    """
    rng = np.random.default_rng(seed)
    g = np.where(rng.random(n) < 0.15, "B", "A")
    x1, x2 = rng.normal(size=(2, n))
    y = np.where(g == "A", x1 + x2 > 0, x1 * x2 > 0).astype(int)
    return pd.DataFrame({"x1": x1, "x2": x2, "g": g, "y": y})


@pytest.fixture
def linear_csv(tmp_path):
    p = tmp_path / "linear.csv"
    linear_data().to_csv(p, index=False)
    return p


def save_tiny_bert(folder: Path) -> Path:
    """A 2-layer BERT (hidden 64, random weights; initializer range 0.1 so its layers matter) saved in ``folder``
    with MiniLM's tokenizer: the stand-in for the package's MiniLM where the real one would take minutes."""
    import shutil

    import torch
    from transformers import BertConfig, BertModel

    import frugalml.candidates.text as text

    real = text.model_path()
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=256, max_position_embeddings=512, initializer_range=0.1)
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(real / name, folder / name)
    return folder


def linear_run(out, data=None):
    """A run directory with one fitted linear model on ``data`` (default linear_data(300)), selected fast."""
    import frugalml
    from frugalml.evaluation import CostConfig

    frugalml.select(linear_data(n=300) if data is None else data, "label", candidates=["linear"], folds=2,
                    repeats=1, out=out,
                    cost=CostConfig(latency_calls=50, time_budget_s=0.01, batch_large=50, memory_probe=False))
    return out


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a server started in another process)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def same_decision(a: dict, b: dict) -> None:
    """Two runs decided alike: the same candidates in order, with the same quality, comparison with the best,
    groups and verdicts, and the same best and recommended (costs, timed, may differ)."""
    assert [c["name"] for c in a["candidates"]] == [c["name"] for c in b["candidates"]]
    for x, y in zip(a["candidates"], b["candidates"]):
        assert (x["quality"], x["vs_best"], x["groups"], x["on_par"]) == (y["quality"], y["vs_best"], y["groups"],
                                                                          y["on_par"])
    assert (a["best"], a["recommended"]) == (b["best"], b["recommended"])
