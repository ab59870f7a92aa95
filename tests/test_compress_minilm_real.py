"""encoder-prune and distill-text on the real MiniLM (slow): in a module of its own, because the modules that
test on the tiny BERT put it in place of the package's model for as long as they run."""

import numpy as np
import pytest
from test_compress_text import embeddings, encoder

from frugalml.compression import compress
from frugalml.compression.distill_text import DistillTextConfig
from frugalml.compression.prune_encoder import PruneEncoderConfig


@pytest.mark.slow
def test_on_real_minilm_pruned_and_distilled():
    """The real MiniLM (minilm_linear on 250 debate statements, 150 to calibrate, 200 held out)."""
    from frugalml.candidates import CANDIDATES, build_pipeline
    from frugalml.data import load_task, prepare_frame, read_table

    df = read_table("builtin:debates")[0].sample(600, random_state=0).reset_index(drop=True)
    task = load_task(df, "party", text=["statement"])
    X, y = prepare_frame(df, task.schema), task.y
    pipe = build_pipeline(CANDIDATES.get("minilm_linear").build("classification", 0), task.schema)
    pipe.fit(X.iloc[:250], y[:250])
    cal, held = (X.iloc[250:400], y[250:400]), X.iloc[400:]
    teacher = pipe.predict(held)
    variant = compress(pipe, PruneEncoderConfig(3, 1.0), calibration=cal)
    # 22.7M parameters less the pooler (148K) and 3 layers of 1.77M: 24% fewer, half the layers
    assert encoder(variant).frugal_param_count() == 22_713_216 - 147_840 - 3 * 1_774_464
    cos = (embeddings(variant, held) * embeddings(pipe, held)).sum(1)
    assert cos.mean() > 0.6, cos.mean()  # measured 0.71 (0.30 before the fine-tune, keeping the first 3 layers)
    assert (variant.predict(held) == teacher).mean() > 0.65  # measured 0.73
    student = compress(pipe, DistillTextConfig(), calibration=cal)
    assert (student.predict(held) == teacher).mean() > np.bincount(teacher).max() / len(teacher)
