"""torch.compile for the decode engine's one-token step; prefill stays eager.

Batch-1 decode runs ~60 small ops per layer around the weight reads (norms, RoPE, cache writes, residuals):
~4 ms a token on SmolLM2-135M (2 threads), next to ~31 ms of fp32 matmuls but ~4 ms of int4 ones. Inductor
fuses them into a few C++ loops per layer and removes the Python in between; the matmuls (fp32, int8 or int4
kernels) are called as before. Measured: fp32 +5%, int8 +30%, int4 +35% decode tokens/s.

One graph serves every cache length and position: it is traced with dynamic sizes, and each step attends to
the filled prefix of the cache (``kv_len = pos + 1``), so neither a new prompt length nor a longer
generation recompiles. Calls that are not a decode step (prefill, speculative blocks, other batch sizes)
run the model's eager forward: they would otherwise each compile a graph of their own. The graph belongs to
the Llama class, not to one model: a second model of the same weight types reuses it (parameters are inputs).
"""

from __future__ import annotations

import time

from ...errors import ConfigError, need


def compile_decode(model, batch: int = 1, fullgraph: bool = True) -> float:
    """Compile ``model``'s decode step (tokens (batch, 1) at pos (1,)) in place; -> seconds spent compiling.

    ``model(tokens, pos)`` and ``generate(model, ...)`` work as before; the compiled step gives the same
    logits as eager up to float rounding. The compile happens here, on throwaway caches, so that it is
    timed apart from decoding (CPU inductor: it needs a C++ compiler).
    """
    torch = need("torch", "compiling the decode step", "torch")
    if getattr(model, "compiled_decode", None) is not None:
        raise ConfigError("this model's decode step is already compiled; compile a fresh model")
    if batch < 1:
        raise ConfigError(f"batch must be at least 1, not {batch}")
    eager = model.forward
    step = torch.compile(eager, fullgraph=fullgraph, dynamic=True)

    def forward(tokens, pos, first_row: int = 0, kv_len: int | None = None, last: bool = False):
        if tokens.shape == (batch, 1) and pos.dim() == 1 and first_row == 0:  # a decode step
            return step(tokens, pos, 0, kv_len or int(pos[-1]) + 1)  # attend to the filled prefix
        return eager(tokens, pos, first_row, kv_len, last)

    model.forward = forward  # an instance attribute: nn.Module.__call__ finds it before the class's method
    model.compiled_decode = step
    device = model.embed_tokens.weight.device
    t0 = time.perf_counter()
    # two throwaway caches: a second length and position must not recompile. Their lengths are odd so that
    # no model dimension equals them (tracing would tie the two sizes and fix the cache length); the tensors
    # are made under inference_mode, as generate() makes its own (the graph is specialised to that mode).
    with torch.inference_mode():
        tokens = torch.zeros(batch, 1, dtype=torch.long, device=device)
        for cache_len, pos in ((19, 3), (23, 9)):
            model.setup_cache(batch, cache_len)
            forward(tokens, torch.tensor([pos], device=device))
    return time.perf_counter() - t0
