"""Data: one record type (`Sample`), loaders for the MemAgent/ReMemR1/RULER schemas, the
long-context builder and the offline RevHop benchmark.

    from rememr1.data import load_samples, iter_context_text
    for s in load_samples("eval_hotpotqa_800.json"):
        for piece in iter_context_text(s.context): ...
"""

from rememr1.data.loaders import detect_schema, iter_samples, load_samples
from rememr1.data.longctx import build_longctx
from rememr1.data.records import LazyContext, Sample, context_to_str, iter_context_text
from rememr1.data.lengths import parse_length

__all__ = [
    "LazyContext",
    "Sample",
    "build_longctx",
    "context_to_str",
    "detect_schema",
    "generate_revhop",
    "iter_context_text",
    "iter_samples",
    "load_samples",
    "parse_length",
]


def __getattr__(name: str):
    # The RevHop generator loads on first use: loading a data file (even one holding lazy
    # RevHop contexts, rebuilt by `revhop.context`) never imports it.
    if name == "generate_revhop":
        from rememr1.data.revhop.write import generate_revhop

        return generate_revhop
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
