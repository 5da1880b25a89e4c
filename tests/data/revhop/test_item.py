"""One record: token counts with the estimate and with a named tokenizer."""

from __future__ import annotations

from rememr1.data.revhop.item import make_item
from rememr1.data.tokens import WORDS_TO_TOKENS, WordEstimate, make_token_counter, measure_ratio


def test_word_estimate_matches_builtin_tokenizer():
    """The documented words->tokens ratio holds against SmolLM2 on RevHop text."""
    smol = make_token_counter("smollm2")
    it = make_item(seed=7, length=16384, hops=2, order="reverse", index=0, counter=WordEstimate())
    ratio = measure_ratio([it["context"]], smol)
    assert abs(ratio - WORDS_TO_TOKENS) / WORDS_TO_TOKENS < 0.04


def test_named_tokenizer_counts_tokens():
    smol = make_token_counter("smollm2")
    it = make_item(seed=7, length=6000, hops=2, order="forward", index=1, counter=smol)
    assert it["token_counter"] == "smollm2-135m-instruct"
    whole = smol.count(it["context"])
    assert abs(whole - it["tokens"]) <= 0.02 * it["tokens"]
    assert it["tokens"] <= 6000
