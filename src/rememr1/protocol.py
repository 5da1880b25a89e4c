"""The agent's text protocol: prompt templates, neutralising document text, parsing replies.

Prompts are plain-text template files (`templates/*.txt`) with the placeholders
`{problem}`, `{recalled_memory}`, `{memory}` and `{section}`; a user can point
`--templates DIR` at their own copies (for example the exact wording a checkpoint was
trained on). Replies are parsed leniently: missing, repeated, unclosed, multi-line and
oddly cased tags always give a defined `ParsedReply`.

Text that did not come from the protocol itself (document chunks, the question, memories
the model wrote) is *neutralised* before it goes into a prompt: anything that looks like
one of our tags or like `\\boxed{` is defused, so a document cannot close the <section>
block early or smuggle in an <update>, <recall> or answer.

`answer_of` is the one answer rule: `ask`, `eval`, rewards and training all take a reply's
answer from it. The official code's own readings of a reply (whole-reply memory, its
recall regex, its box finder) live here too, under "official readings", for the
compatibility switches of `rememr1.compat`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .errors import InputError

NO_MEMORY = "No previous memory"
NO_RECALL = "No memory was recalled."

# Every tag name the prompts or replies use. Neutralisation defuses all of them.
PROTOCOL_TAGS = (
    "problem",
    "recalled_memory",
    "memory",
    "section",
    "update",
    "recall",
    "thinking",
    "think",
)

_TAG_LIKE = re.compile(r"<(\s*/?\s*)(" + "|".join(PROTOCOL_TAGS) + r")\b", re.IGNORECASE)
_BOXED_LIKE = re.compile(r"\\+(boxed)", re.IGNORECASE)


def neutralize(text: str) -> str:
    """Defuse protocol markup in untrusted text.

    `<update>` becomes `&lt;update>` (any case, any spacing, opening or closing), and
    `\\boxed` loses its backslash(es). The words stay readable to the model; they just no
    longer parse as actions or block boundaries.
    """
    text = _TAG_LIKE.sub(lambda m: "&lt;" + m.group(1) + m.group(2), text)
    return _BOXED_LIKE.sub(r"\1", text)


# ---------------------------------------------------------------------------- templates

_PLACEHOLDER = re.compile(r"\{(problem|recalled_memory|memory|section)\}")


@dataclass(frozen=True)
class Template:
    """One prompt template; `render` fills the placeholders it contains, in one pass."""

    name: str
    text: str

    @property
    def placeholders(self) -> set[str]:
        return set(_PLACEHOLDER.findall(self.text))

    def render(self, **values: str) -> str:
        missing = self.placeholders - values.keys()
        if missing:
            raise InputError(f"template {self.name} needs values for {sorted(missing)}")
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], self.text)


@dataclass(frozen=True)
class TemplateSet:
    """The prompts of one method: a memory-step prompt (None for single-prompt methods)
    and a final prompt."""

    step: Template | None
    final: Template


# What each method's templates must contain, so a user-supplied file cannot silently
# drop the document or the question.
_REQUIRED = {
    "step": {"problem", "memory", "section"},
    "final": {"problem", "memory"},
    "context": {"problem", "section"},
}

_DEFAULT_FILES = {
    "rememr1": ("step_rememr1.txt", "final_rememr1.txt"),
    "rule-callback": ("step_rememr1.txt", "final_rememr1.txt"),
    "memagent": ("step_memagent.txt", "final_memagent.txt"),
    "full-context": (None, "final_context.txt"),
    "rag": (None, "final_context.txt"),
}


def _read_template(name: str, directory: Path | None) -> Template:
    if directory is not None and (directory / name).is_file():
        path = directory / name
        try:
            return Template(str(path), path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read template {path}: {e}") from None
    text = resources.files("rememr1.templates").joinpath(name).read_text(encoding="utf-8")
    return Template(name, text)


def load_templates(method: str, directory: str | Path | None = None) -> TemplateSet:
    """The templates for `method`; files in `directory` with the default file names
    (e.g. `step_rememr1.txt`) replace the built-in ones."""
    if method not in _DEFAULT_FILES:
        raise InputError(f"unknown method {method!r}; choose one of: {', '.join(_DEFAULT_FILES)}")
    d = Path(directory) if directory is not None else None
    if d is not None and not d.is_dir():
        raise InputError(f"template directory not found: {d}")
    step_name, final_name = _DEFAULT_FILES[method]
    step = _read_template(step_name, d) if step_name else None
    final = _read_template(final_name, d)
    checks = [(final, "context" if step is None else "final")]
    if step is not None:
        checks.append((step, "step"))
    for tpl, role in checks:
        missing = _REQUIRED[role] - tpl.placeholders
        if missing:
            raise InputError(
                f"template {tpl.name} lacks placeholder(s) "
                + ", ".join("{" + m + "}" for m in sorted(missing))
            )
    return TemplateSet(step=step, final=final)


def render_prompt(
    template: Template,
    *,
    problem: str,
    memory: str | None = "",
    recalled: str = "",
    section: str = "",
    verbatim_memory: bool = False,
) -> str:
    """Fill a template with neutralised values and the protocol's placeholders.

    A blank memory (or None) shows the "No previous memory" placeholder, a blank recalled
    memory "No memory was recalled.". `verbatim_memory` (official compatibility) shows the
    model's own memories as written: their tags are not defused, and a memory that is
    blank after the first step (None = before it) is shown blank. The question and the
    document are neutralised either way.
    """
    if verbatim_memory:
        shown_memory = NO_MEMORY if memory is None else memory
        shown_recalled = recalled if recalled.strip() else NO_RECALL
    else:
        shown_memory = neutralize(memory) if memory and memory.strip() else NO_MEMORY
        shown_recalled = neutralize(recalled) if recalled.strip() else NO_RECALL
    return template.render(
        problem=neutralize(problem),
        memory=shown_memory,
        recalled_memory=shown_recalled,
        section=neutralize(section),
    )


# ---------------------------------------------------------------------------- parsing


def _open(tag: str) -> re.Pattern:
    return re.compile(r"<\s*" + tag + r"\s*>", re.IGNORECASE)


def _close(tag: str) -> re.Pattern:
    return re.compile(r"<\s*/\s*" + tag + r"\s*>", re.IGNORECASE)


_THINK_OPEN = re.compile(r"<\s*(thinking|think)\s*>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"<\s*/\s*(thinking|think)\s*>", re.IGNORECASE)
_UPDATE_OPEN, _UPDATE_CLOSE = _open("update"), _close("update")
_RECALL_OPEN, _RECALL_CLOSE = _open("recall"), _close("recall")
_ANY_TAG = re.compile(r"<\s*/?\s*(?:" + "|".join(PROTOCOL_TAGS) + r")\s*>", re.IGNORECASE)


@dataclass(frozen=True)
class Block:
    content: str
    closed: bool
    start: int  # span of the whole block, tags included
    end: int


def find_blocks(text: str, open_re: re.Pattern, close_re: re.Pattern) -> list[Block]:
    """Non-nested blocks in order. An unclosed block runs to the next protocol tag (or
    the end of the text) and is marked `closed=False`."""
    blocks: list[Block] = []
    pos = 0
    while True:
        m = open_re.search(text, pos)
        if m is None:
            return blocks
        c = close_re.search(text, m.end())
        nxt = open_re.search(text, m.end())
        if c is not None and (nxt is None or c.start() < nxt.start()):
            blocks.append(Block(text[m.end() : c.start()], True, m.start(), c.end()))
            pos = c.end()
        else:
            other = _ANY_TAG.search(text, m.end())
            end = other.start() if other is not None else len(text)
            blocks.append(Block(text[m.end() : end], False, m.start(), end))
            pos = end


def remove_blocks(text: str, blocks: list[Block]) -> str:
    out, pos = [], 0
    for b in blocks:
        out.append(text[pos : b.start])
        pos = b.end
    out.append(text[pos:])
    return "".join(out)


def _closing_brace(text: str, start: int) -> int | None:
    """Index of the brace closing the one opened just before `start`, or None."""
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    return None


def boxed_contents(text: str) -> list[str]:
    """Contents of every complete, brace-matched `\\boxed{...}` in order (nesting OK)."""
    out: list[str] = []
    for m in re.finditer(r"\\boxed\s*\{", text):
        end = _closing_brace(text, m.end())
        if end is not None:
            out.append(text[m.end() : end])
    return out


def strip_recall_spans(text: str) -> str:
    """The text without its <recall>…</recall> spans (unclosed: to the next tag/end)."""
    return remove_blocks(text, find_blocks(text, _RECALL_OPEN, _RECALL_CLOSE))


# What models write in a <recall> block when they have nothing to look up: often the
# placeholder they were shown under <recalled_memory>, copied back.
_NOT_QUERIES = frozenset({"", "none", "null", "n/a", NO_RECALL.lower().rstrip("."),
                          NO_MEMORY.lower().rstrip(".")})


def is_query(text: str) -> bool:
    """A <recall> block's content is a query unless it is blank, "none", or a copy of one
    of the prompt's placeholders ("No memory was recalled.", "No previous memory"); case,
    surrounding space and a final full stop do not matter."""
    return " ".join(text.split()).lower().rstrip(".").strip() not in _NOT_QUERIES


@dataclass(frozen=True)
class ParsedReply:
    """What a model reply means, whatever shape it came in."""

    thinking: str | None  # first thinking block, if any
    update: str | None  # last non-empty <update> content (recall spans removed), or None
    n_update: int  # number of <update> blocks (closed or not)
    update_closed: bool  # the chosen update block was closed
    recall: str | None  # first <recall> content that is a query (`is_query`), or None
    n_recall: int
    boxed: str | None  # last complete \boxed{} content
    n_boxed: int


def parse_reply(reply: str) -> ParsedReply:
    thinking_blocks = find_blocks(reply, _THINK_OPEN, _THINK_CLOSE)
    # Actions are looked for outside *closed* thinking spans: a model that drafts
    # "<update>" while thinking has not acted yet. An unclosed thinking block is kept,
    # otherwise a reply that forgot </thinking> would lose its update.
    body = remove_blocks(reply, [b for b in thinking_blocks if b.closed])
    updates = find_blocks(body, _UPDATE_OPEN, _UPDATE_CLOSE)
    chosen = None
    for b in reversed(updates):
        content = strip_recall_spans(b.content).strip()
        if content:
            chosen = (content, b.closed)
            break
    recalls = find_blocks(body, _RECALL_OPEN, _RECALL_CLOSE)
    query = next((b.content.strip() for b in recalls if is_query(b.content)), None)
    boxes = boxed_contents(body)
    return ParsedReply(
        thinking=thinking_blocks[0].content.strip() if thinking_blocks else None,
        update=chosen[0] if chosen else None,
        n_update=len(updates),
        update_closed=chosen[1] if chosen else False,
        recall=query,
        n_recall=len(recalls),
        boxed=boxes[-1].strip() if boxes else None,
        n_boxed=len(boxes),
    )


FALLBACKS = ("keep", "reply", "empty")


def memory_from_reply(parsed: ParsedReply, reply: str, previous: str, fallback: str) -> str:
    """The new memory: the <update> content, or the fallback when there is none.

    keep  -- keep the previous memory (default: a malformed reply loses nothing)
    reply -- the whole reply minus <recall> spans, thinking included (official code)
    empty -- forget everything
    """
    if parsed.update is not None:
        return parsed.update
    if fallback == "keep":
        return previous
    if fallback == "reply":
        return strip_recall_spans(reply).strip()
    if fallback == "empty":
        return ""
    raise InputError(f"unknown fallback {fallback!r}; choose one of: {', '.join(FALLBACKS)}")


# ---------------------------------------------------------------------------- the answer


ANSWER_FORMATS = ("boxed", "answer-is")

# LaTeX wrappers a model puts around a plain-text answer: \text{Paris}, \textbf{...}, ...
_TEXT_WRAPPER = re.compile(
    r"\\(?:text|textbf|textit|textrm|textsf|texttt|textnormal|mathrm|mathbf|mathit|mathsf"
    r"|mbox|operatorname)\s*\{"
)
_MATH_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_ANSWER_IS = re.compile(r"the answer is", re.IGNORECASE)
_TRAILING = ".,;:!?" + " \t\r\n"


def clean_answer(text: str) -> str:
    r"""An answer without the LaTeX packaging models put around plain text: every
    ``\text{X}``-style wrapper (brace-matched, anywhere) becomes X, and math delimiters
    around the whole answer (``$X$``, ``$$X$$``, ``\(X\)``, ``\[X\]``) are dropped,
    repeatedly. ``\boxed{\text{Paris}}`` and ``\boxed{$\textbf{Paris}$}`` both answer "Paris".
    """
    out, pos = [], 0
    while (m := _TEXT_WRAPPER.search(text, pos)) is not None:
        end = _closing_brace(text, m.end())
        if end is None:
            break
        out.append(text[pos : m.start()])
        out.append(clean_answer(text[m.end() : end]))
        pos = end + 1
    text = ("".join(out) + text[pos:]).strip()
    changed = True
    while changed:
        changed = False
        for left, right in _MATH_DELIMITERS:
            if len(text) > len(left) + len(right) - 1 and text.startswith(left) and text.endswith(right):
                inner = text[len(left) : len(text) - len(right)]
                if left == "$" and "$" in inner:
                    continue  # "$a$ and $b$" is not one wrapped answer
                text, changed = inner.strip(), True
                break
    return text


def answer_is(text: str) -> str | None:
    """The text after the last "the answer is" (any case) to the end of that line, with
    markdown emphasis, a leading colon and trailing punctuation removed; None when the
    phrase is absent or nothing follows it. (The official scorer takes the rest of the
    reply; stopping at the line end keeps a closing remark out of the answer.)"""
    text = text.replace("*", "")
    matches = list(_ANSWER_IS.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end() :].lstrip(" \t:").lstrip()
    ans = rest.split("\n", 1)[0].strip().rstrip(_TRAILING).strip()
    return clean_answer(ans) or None


def answer_of(reply: str | None, answer_format: str = "boxed", *,
              parsed: ParsedReply | None = None) -> str | None:
    r"""The answer a reply gives: the one rule for `ask`, `eval`, rewards and training.
    `parsed` is `parse_reply(reply)` when the caller has it already (it is not parsed again).

    boxed     -- the content of the last complete, brace-matched ``\boxed{}`` outside
                 closed thinking blocks (nested braces kept, an unclosed box skipped),
                 cleaned by `clean_answer`; "" for an empty box; None with no box.
    answer-is -- for baselines prompted to end with "the answer is X": `answer_is`.
    """
    if reply is None:
        return None
    if answer_format == "boxed":
        boxed = (parsed or parse_reply(reply)).boxed
        return None if boxed is None else clean_answer(boxed)
    if answer_format == "answer-is":
        return answer_is(reply)
    raise InputError(
        f"unknown answer format {answer_format!r}; choose one of: {', '.join(ANSWER_FORMATS)}"
    )


# ---------------------------------------------------------------- official readings
# How the official ReMemR1 code reads a reply (SPEC §9). Used only where a compatibility
# switch asks for it; each function states the rule it reproduces.

_OFFICIAL_RECALL_SPAN = re.compile(r"<recall>.*?</recall>", re.DOTALL)
_OFFICIAL_RECALL_QUERY = re.compile(r"<recall>(.+)</recall>")
_OFFICIAL_UPDATE = re.compile(r"<update>(.*?)</update>")
_OFFICIAL_BOX_COUNT = re.compile(r"\\boxed{(.+)}")


def official_memory(reply: str) -> str:
    """The memory the official code keeps: the whole reply with every (case-sensitive,
    possibly multi-line) <recall>...</recall> span removed, stripped; thinking and the
    <update> tags stay in."""
    return _OFFICIAL_RECALL_SPAN.sub("", reply).strip()


def official_recall_query(reply: str) -> str | None:
    """The official query: the first match of the greedy single-line pattern
    ``<recall>(.+)</recall>`` anywhere in the reply (two blocks on one line give one
    query spanning both; a placeholder copied into the block is a query too)."""
    m = _OFFICIAL_RECALL_QUERY.search(reply)
    return m.group(1) if m else None


def official_updates(reply: str) -> list[str]:
    """Contents of the single-line ``<update>(.*?)</update>`` matches (an <update> whose
    content spans lines does not match), as the official memory and format rewards read them."""
    return _OFFICIAL_UPDATE.findall(reply)


def official_box_count(reply: str) -> int:
    r"""Non-empty matches of the greedy single-line ``\boxed{(.+)}`` (the official final-step
    format check: two boxes on one line count once)."""
    return sum(1 for m in _OFFICIAL_BOX_COUNT.findall(reply) if m)


def official_boxed(text: str) -> str | None:
    r"""The last box as the official scorers (MATH-style) find it.

    If ``\boxed `` (with a space) occurs anywhere, the answer is what follows its last
    occurrence up to the next ``$``. Otherwise the last ``\boxed`` is brace-matched from
    there: None when unclosed, and None when it does not read ``\boxed{...}`` (their
    check rejects ``\boxedx{...}`` and their ``\fbox`` fallback alike).
    """
    if "\\boxed " in text:
        return text.split("\\boxed ")[-1].split("$")[0]
    idx = text.rfind("\\boxed")
    if idx < 0 or not text.startswith("\\boxed{", idx):
        return None
    start = idx + len("\\boxed{")
    end = _closing_brace(text, start)
    return None if end is None else text[start:end]
