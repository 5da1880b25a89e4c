"""RevHop: an offline multi-hop long-context benchmark (SPEC §8), generated, not downloaded.

    rememr1 data revhop --out data/revhop --lengths 4k,16k,64k,1m --hops 2,3 --order reverse,forward -n 64
    paths = generate_revhop(out_dir="data/revhop", lengths=["4k"], hops=[2], orders=["reverse"], n=8)

An item is an H-hop chain through a seeded fictional world (`world.py`): the question
names only the start entity e0 ("Which city is the birthplace of the author of The
Morvane Letters?"); the bridge entities e1..e(H-1) and the answer eH appear only in the
document. Hop k's evidence is the paragraph about e(k-1), which states r_k(e(k-1)) = e_k.
The document ("Document {i}:\\n{title}\\n{text}" blocks, blank lines between, as in the
HotpotQA-based files: `data/documents.py`) holds:
- the H evidence paragraphs at controlled token offsets with a minimum gap, in
  `reverse` order (hop 1 latest, the last hop earliest: a forward-only memory has already
  read past the later hops when it learns what to look for), `forward` order (control)
  or `random` order;
- siblings: paragraphs of the same kind about other entities that share the hop's bridge
  or at least its schema (memory pressure);
- decoys: item-local entities whose names are one letter away from the chain's names;
- filler: paragraphs about other world entities (never the chain's subjects), up to the
  target length. The world has 5,000 entities at `world_scale=1`; at multi-million-token
  lengths filler entities recur (fresh wording, same facts): 4M tokens is ~54K paragraphs,
  ~11 per entity. Raise `world_scale` for fewer repeats.

Lengths are in tokens (k = 1024), counted per document block with the named tokenizer or
the words x 1.92 estimate (`tokens.py`); the last block that fits ends the document, so
it is at most the target and within about one paragraph of it.

The question, evidence, siblings and decoys of item i depend only on (seed, hops, i), so
the same question appears at every length and order; the layout and filler depend on
(seed, length, hops, order, i). Every random draw is per item, so files are identical for
any worker count. Items above `lazy_above` tokens are stored as a generator spec instead
of text and materialised lazily (`RevHopContext`, bounded memory); the loaders rebuild
them. Schema A parquet (training) is written only for lengths stored as text.

Records also carry `evidence_facts` (each hop's subject, relation, object and sentence)
and, for text contexts, `candidate_facts` (every statement of a hop-2..H relation, in
document order): what `oracle.py` needs to write warm-start traces.

Validity checks run on every item and reject it (the generator then tries another chain)
when: the chain's answer is not unique given everything the item states; a bridge or the
answer is named in the question; a later-hop evidence paragraph shares a distinctive word
with the question (lexical shortcut); the answer is contained in another entity's name or
contains one (sub-EM could not tell them apart). Closed-book answerability is ~0 by
construction: every name is invented.

The package, from the bottom up (a module imports only modules listed before it):
- `world`: entities, relations, names and paragraph templates;
- `context`: the stored spec of a document and `RevHopContext`, which rebuilds it; all
  that loading a RevHop file needs (it imports nothing of the generator);
- `content`: an item's chain, question, evidence, siblings, decoys and validity checks;
- `layout`: where those paragraphs go at a length and order, and the filler around them;
- `facts`: the evidence and candidate facts records carry for the oracle;
- `item`: one schema-D record and its schema-A row;
- `write`: `generate_revhop`, the files, workers and formats.
The names below are importable from `rememr1.data.revhop` and load their module on first
use, so importing one module of the package (the loaders import `context`) does not
import the rest.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> the module of this package that defines it (loaded on first access).
_EXPORTS = {
    "generate_revhop": "write", "FORMATS": "write", "ProgressFn": "write",
    "make_item": "item", "to_training_row": "item", "LAZY_ABOVE": "item",
    "candidate_facts": "facts", "evidence_facts": "facts", "fact_sentence": "facts",
    "layout_item": "layout", "check_layout": "layout", "resolve_gap": "layout",
    "Layout": "layout", "ORDERS": "layout", "BLOCK_SLACK": "layout",
    "sample_content": "content", "build_content": "content", "check_content": "content",
    "make_question": "content", "ItemContent": "content", "Special": "content",
    "RevHopInvalid": "content", "MAX_ATTEMPTS": "content",
    "RevHopContext": "context", "context_from_spec": "context", "make_spec": "context",
    "filler_paragraph": "context", "paragraph_block": "context",
    "GENERATOR_VERSION": "context", "PIECE_CHARS": "context",
    "World": "world", "build_world": "world", "Paragraph": "world", "Entity": "world",
}
# Length parsing lives in `rememr1.data.lengths`; kept here for existing callers.
_ELSEWHERE = {"parse_length": "rememr1.data.lengths", "format_length": "rememr1.data.lengths"}

__all__ = sorted([*_EXPORTS, *_ELSEWHERE])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
    elif name in _ELSEWHERE:
        module = importlib.import_module(_ELSEWHERE[name])
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
