"""runtime: what makes inference fast. For language models: frugalml's own decode engine over a Llama-family
model's weights (``llama.py``: the model with a static KV cache; ``generate.py``: prefill, one token per
step, greedy or seeded temperature/top-p sampling; ``loading.py``: local Hugging Face folders)."""
