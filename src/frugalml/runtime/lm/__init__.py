"""lm: frugalml's own decode engine over a Llama-family model's weights (``llama.py``: the model with a static KV
cache; ``generate.py``: prefill, one token per step, greedy or seeded temperature/top-p sampling; ``loading.py``:
local Hugging Face folders and GGUF files; ``formats/``: the weight formats of the linear layers, by name;
``weight_cache.py``: quantized weights made once; ``engine.py``: the options of ``frugal generate`` put together)."""
