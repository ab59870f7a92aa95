"""Child process that measures peak memory of loading a model folder and predicting one batch.

Run as ``python -m frugalml.evaluation._memprobe MODEL_DIR BATCH.parquet``; prints the MB added to the
peak resident set after imports, so each candidate is measured alone, not after the others.
"""

import sys


def main() -> None:
    import pandas as pd

    from frugalml.candidates.artifact import load
    from frugalml.evaluation.memory import reset_peak, rss_mb

    folder, batch_path = sys.argv[1], sys.argv[2]
    batch = pd.read_parquet(batch_path)
    import onnxruntime  # noqa: F401  (imported before the baseline: it is the runtime, not the model)
    import sklearn  # noqa: F401
    import skops.io  # noqa: F401

    if not reset_peak():
        print("nan")
        return
    base, _ = rss_mb()
    model = load(folder, threads=1)
    model.predict(batch)
    _, peak = rss_mb()
    print(max(0.0, peak - base))


if __name__ == "__main__":
    main()
