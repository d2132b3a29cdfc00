"""A tiny random Llama and its tokenizer, built in code, for fast tests of the real code paths.

The tokenizer is a byte-level BPE trained in milliseconds on a small corpus, with the ChatML special tokens
and a chat template shaped like SmolLM2's, so prompts, padding, `<answer>` detection and re-tokenization behave
as they do with the real model. The weights are random (seeded), so the model's text is gibberish.
"""

from __future__ import annotations

import functools

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test model.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] }}"
    "{% if not (loop.last and continue_final_message) %}{{ '<|im_end|>\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_CORPUS = [
    "Analyse the user's history in depth and name the next item inside <answer> and </answer>.",
    "Summarise the key attributes of the item inside <answer> and </answer>.",
    "<analyze user> </analyze user> <analyze item> </analyze item> <match> </match> <rate>3</rate>",
    "Title: Toy Story (1995) Genres: Animation, Children's, Comedy Year: 1995 Average rating 4.1 from 2077",
    "3d ago 2w ago 5h ago 1y ago 0 1 2 3 4 5 6 7 8 9 rating ratings user item movie history watched liked",
    "The quick brown fox jumps over the lazy dog. Drama Thriller Action Romance Horror Sci-Fi Western.",
]


@functools.cache
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A ~400-token byte-level BPE with ChatML specials (cached: training is deterministic)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
    )


def tiny_llama(seed: int = 0, hidden_size: int = 64, num_layers: int = 2) -> LlamaForCausalLM:
    """A random Llama (seeded) sized for unit tests; vocabulary matches `tiny_tokenizer()`."""
    tokenizer = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def script_tiny_llama(model: LlamaForCausalLM, start_id: int, script_ids: list[int], end_id: int) -> None:
    """Rewire a tiny Llama in place so that greedy decoding after token `start_id` emits `script_ids`, then `end_id`.

    Attention and MLP outputs are zeroed, so each position's final hidden state depends only on its own token;
    the chain tokens get orthogonal embeddings and each one's lm_head row points at its successor. Lets tests
    drive the real decode loop down a chosen path (e.g. a model that writes `<answer>` itself, or one that
    spells it with non-canonical tokens). All chain tokens must be distinct.
    """
    chain = [start_id, *script_ids]
    if len(set(chain)) != len(chain) or end_id in chain:
        raise ValueError("script tokens must be distinct from each other, the start token and the end token")
    hidden = model.config.hidden_size
    if len(chain) > hidden:
        raise ValueError(f"a script of {len(script_ids)} tokens needs hidden_size > {len(chain)}")
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.norm.weight.fill_(1.0)
        basis = torch.eye(hidden)
        for position, token in enumerate(chain):
            model.model.embed_tokens.weight[token] = basis[position]
        successors = [*script_ids, end_id]
        for position, token in enumerate(successors):
            model.lm_head.weight[token] = 50.0 * basis[position]
