"""Build the tiny test checkpoint: a random GPT-J and a byte-level BPE tokenizer trained here.

Nothing here touches the network, the 6B weights or a GPU, and nothing needs pytest, so
`tests/make_tiny_checkpoint.py` can use it after a plain `pip install .`.
"""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).parent / "data"
SPECIALS = ["[BOS]", "[EOS]", "[UNK]", "[PAD]", "[MASK]"]
TINY_CONTEXT = 128


def korean_lines() -> list[str]:
    return (DATA / "korean.txt").read_text(encoding="utf-8").splitlines()


def train_tokenizer(vocab_size: int = 320):
    """A byte-level BPE small enough that many Hangul syllables span several tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(korean_lines(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def tiny_config(vocab_size: int, **overrides):
    from transformers import GPTJConfig

    shape = dict(n_positions=TINY_CONTEXT, n_embd=64, n_layer=2, n_head=4, rotary_dim=8)
    ids = dict(bos_token_id=0, eos_token_id=1, tie_word_embeddings=False)
    return GPTJConfig(vocab_size=vocab_size, **{**shape, **ids, **overrides})


def build_checkpoint(path: Path, seed: int = 0, bin_fp16: bool = False, **config_overrides) -> Path:
    """Save a tiny random GPT-J and its tokenizer to `path`.

    `bin_fp16` stores the weights as the hub's KoGPT does: a float16 `pytorch_model.bin`;
    `config_overrides` change the config (e.g. `tie_word_embeddings=True`).
    """
    import torch
    from transformers import GPTJForCausalLM

    tokenizer = train_tokenizer()
    torch.manual_seed(seed)
    config = tiny_config(len(tokenizer) + 12, **config_overrides)  # padded, like KoGPT's 64,512
    model = GPTJForCausalLM(config).eval()
    # Random init puts near-equal mass everywhere; sharpen the output so samples differ by seed.
    with torch.no_grad():
        model.lm_head.weight.mul_(8)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(path)
    if bin_fp16:
        config.dtype = "float16"
        config.save_pretrained(path)
        state = {k: v.half() for k, v in model.state_dict().items()}
        torch.save(state, path / "pytorch_model.bin")
    else:
        model.save_pretrained(path)
    return path
