"""Tiny random Llama models built in-process: a transformers reference and frugalml's engine on its weights."""

import pytest
import torch
import transformers

from frugalml.runtime.lm.llama import Llama, LlamaSpec


def tiny_hf(seed=0, **over):
    torch.manual_seed(seed)
    cfg = dict(vocab_size=256, hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=False)
    cfg.update(over)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg)).eval()
    for p in model.parameters():  # larger weights than the init: confident, well separated logits
        p.data.normal_(0, 0.3)
    return model


def ours(hf):
    m = Llama(LlamaSpec.from_hf_config(hf.config.to_dict()))
    m.load_hf_state_dict(hf.state_dict())
    return m.eval()


def tiny_folder(path, seed=6):
    """A tiny random Llama saved as a local Hugging Face folder, with a word-level tokenizer made here
    (words w0..w254); -> (folder, transformers model, tokenizer)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(255)} | {"<unk>": 255}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")
    hf = tiny_hf(seed=seed)
    hf.save_pretrained(path)
    fast.save_pretrained(path)
    return path, hf, fast


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    """Quantized weights cached under the test's tmp_path, not in ~/.cache (autouse where imported)."""
    monkeypatch.setenv("FRUGAL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"
