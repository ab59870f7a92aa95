"""Load a causal language model from a local Hugging Face folder (config.json + safetensors + tokenizer)."""

from __future__ import annotations

import json
from pathlib import Path

from ...errors import ModelError, need

SUPPORTED = {"llama", "mistral", "qwen2"}  # same decoder layout (Qwen2 adds q/k/v biases: attention_bias)


def load_causal_lm(folder: str | Path, dtype: str = "float32"):
    """-> (model, tokenizer) from ``builtin:smollm2``, a ``.gguf`` file or a local Hugging Face folder;
    nothing is downloaded."""
    torch = need("torch", "the language-model engine", "lm")
    if str(folder) == "builtin:smollm2" or str(folder).lower().endswith(".gguf"):
        from .gguf_loading import builtin_smollm2, load_gguf

        path = builtin_smollm2() if str(folder) == "builtin:smollm2" else Path(folder)
        if not path.is_file():
            raise ModelError(f"GGUF file {folder} not found")
        model, tokenizer = load_gguf(path)
        return model.to(getattr(torch, dtype)), tokenizer
    from safetensors.torch import load_file

    from .llama import Llama, LlamaSpec

    p = Path(folder)
    if not p.is_dir():
        raise ModelError(f"{folder} is not a folder; give builtin:smollm2, a .gguf file or a local Hugging Face "
                         "model folder (config.json, *.safetensors)")
    try:
        config = json.loads((p / "config.json").read_text())
    except FileNotFoundError:
        raise ModelError(f"{folder} has no config.json") from None
    except ValueError:
        raise ModelError(f"{p / 'config.json'} is not valid JSON") from None
    kind = config.get("model_type")
    if kind not in SUPPORTED:
        raise ModelError(f"architecture {kind!r} is not supported; supported: {', '.join(sorted(SUPPORTED))}")
    if kind == "qwen2":
        config = {**config, "attention_bias": True}
    files = sorted(p.glob("*.safetensors"))
    if not files:
        raise ModelError(f"{folder} has no *.safetensors weights (pickled .bin weights are refused)")
    state = {}
    for f in files:
        try:
            state.update(load_file(str(f)))
        except Exception as exc:  # safetensors raises its own error types for damaged files
            raise ModelError(f"{f} is not a readable safetensors file ({type(exc).__name__}); re-save it") from None
    model = Llama(LlamaSpec.from_hf_config(config))
    try:
        model.load_hf_state_dict(state)
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"{folder}: {str(exc).splitlines()[0][:200]}") from None
    model = model.to(getattr(torch, dtype)).eval()
    transformers = need("transformers", "tokenizers of Hugging Face folders", "lm")
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{folder}: no usable tokenizer ({str(exc).splitlines()[0][:120]})") from None
    return model, tokenizer


def source_files(source: str | Path) -> list[Path]:
    """The files ``load_causal_lm(source)`` reads weights from: the GGUF file, or a folder's config.json (it
    says, for one, whether the output layer is the embedding table) and safetensors files."""
    if str(source) == "builtin:smollm2" or str(source).lower().endswith(".gguf"):
        from .gguf_loading import builtin_smollm2

        return [builtin_smollm2() if str(source) == "builtin:smollm2" else Path(source)]
    return [Path(source) / "config.json", *sorted(Path(source).glob("*.safetensors"))]


def load_hf_reference(source: str | Path):
    """The same weights in transformers' own LlamaForCausalLM (float32), as a reference to compare with."""
    torch = need("torch", "the language-model engine", "lm")
    transformers = need("transformers", "the transformers baseline", "lm")
    if str(source) == "builtin:smollm2" or str(source).lower().endswith(".gguf"):
        from .gguf_loading import builtin_smollm2, read_gguf

        config, state = read_gguf(builtin_smollm2() if str(source) == "builtin:smollm2" else Path(source))
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config))
        model.load_state_dict(state, strict=False)
        model.tie_weights()
        return model.eval()
    return transformers.AutoModelForCausalLM.from_pretrained(str(source), local_files_only=True,
                                                             dtype=torch.float32).eval()
