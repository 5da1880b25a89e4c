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
    memory: str = "",
    recalled: str = "",
    section: str = "",
) -> str:
    """Fill a template with neutralised values and the protocol's placeholders."""
    return template.render(
        problem=neutralize(problem),
        memory=neutralize(memory) if memory.strip() else NO_MEMORY,
        recalled_memory=neutralize(recalled) if recalled.strip() else NO_RECALL,
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


def boxed_contents(text: str) -> list[str]:
    """Contents of every complete, brace-matched `\\boxed{...}` in order (nesting OK)."""
    out: list[str] = []
    for m in re.finditer(r"\\boxed\s*\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            ch = text[i]
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            i += 1
        if depth == 0:
            out.append(text[m.end() : i - 1])
    return out


def strip_recall_spans(text: str) -> str:
    """The text without its <recall>…</recall> spans (unclosed: to the next tag/end)."""
    return remove_blocks(text, find_blocks(text, _RECALL_OPEN, _RECALL_CLOSE))


@dataclass(frozen=True)
class ParsedReply:
    """What a model reply means, whatever shape it came in."""

    thinking: str | None  # first thinking block, if any
    update: str | None  # last non-empty <update> content (recall spans removed), or None
    n_update: int  # number of <update> blocks (closed or not)
    update_closed: bool  # the chosen update block was closed
    recall: str | None  # first non-empty <recall> query, or None
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
    query = next((b.content.strip() for b in recalls if b.content.strip()), None)
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
