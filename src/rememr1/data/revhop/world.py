"""RevHop's fictional world: invented names, typed entities, functional relations, and
encyclopedia-style paragraphs about them.

Four kinds of entity (person, place, org, work) and eight typed relations, each a
function (every subject has exactly one object), so a chain of relations from a named
entity has exactly one answer:

    person --born_in--> place      person --works_for--> org     person --mentor--> person
    org --headquartered_in--> place                             org --founded_by--> person
    work --written_by--> person    work --published_by--> org    place --mayor--> person

Names are built from invented words (random syllables); each invented word is used in at
most one name of the world, never collides with the templates' vocabulary, and names are
unique. A paragraph about an entity states all of its relations (in varied wording and
order) plus a little neutral detail, and records the facts it states, so validity checks
can reason about what a document says.

    world = build_world(seed=0)
    para = render_entity(world, world.entities[17], random.Random(1))
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

# ---------------------------------------------------------------------------- schema

RELATIONS: dict[str, tuple[str, str]] = {
    "born_in": ("person", "place"),
    "works_for": ("person", "org"),
    "mentor": ("person", "person"),
    "headquartered_in": ("org", "place"),
    "founded_by": ("org", "person"),
    "written_by": ("work", "person"),
    "published_by": ("work", "org"),
    "mayor": ("place", "person"),
}
KINDS = ("person", "place", "org", "work")
RELATIONS_OF: dict[str, tuple[str, ...]] = {
    k: tuple(r for r, (s, _) in RELATIONS.items() if s == k) for k in KINDS
}

# Noun phrases for questions: "the author of {x}".
QUESTION_PHRASE = {
    "born_in": "the birthplace of {x}",
    "works_for": "the employer of {x}",
    "mentor": "the mentor of {x}",
    "headquartered_in": "the home city of {x}",
    "founded_by": "the founder of {x}",
    "written_by": "the author of {x}",
    "published_by": "the publisher of {x}",
    "mayor": "the mayor of {x}",
}
QUESTION_FRAME = {
    "person": "Who is {np}?",
    "place": "Which city is {np}?",
    "org": "Which organisation is {np}?",
    "work": "Which work is {np}?",
}

# ------------------------------------------------------------------ paragraph templates
# {s} subject, {o} object, {P}/{p} pronoun, {poss} possessive, {year}, {n}, {topic} ...

FACT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "born_in": (
        "{s} was born in {o} in {year}.",
        "{P} was born in {o}.",
        "Born in {o}, {s} spent {poss} early years there.",
    ),
    "works_for": (
        "{s} works for {o}.",
        "Since {later}, {s} has been employed by {o}.",
        "{P} joined {o} in {later} and has stayed there since.",
    ),
    "mentor": (
        "{s} trained under {o}.",
        "{P} was mentored by {o}.",
        "During {poss} early career, {s} was guided by {o} as a mentor.",
    ),
    "headquartered_in": (
        "{s} is headquartered in {o}.",
        "The headquarters of {s} are in {o}.",
        "{s} has its main offices in {o}.",
    ),
    "founded_by": (
        "{s} was founded by {o} in {year}.",
        "{o} founded {s}.",
        "It was established by {o} in {year}.",
    ),
    "written_by": (
        "{s} was written by {o}.",
        "{o} wrote {s} over several years.",
        "The {form} is the work of {o}.",
    ),
    "published_by": (
        "It was published by {o} in {later}.",
        "{o} published {s}.",
        "The first edition of {s} came from {o}.",
    ),
    "mayor": (
        "The mayor of {s} is {o}.",
        "{o} serves as mayor of {s}.",
        "{s} is governed by {o}, its mayor.",
    ),
}

INTRO_TEMPLATES = {
    "person": ("{s} is {occupation}.", "{s} is {occupation} known for work on {topic}."),
    "place": ("{s} is a city on the {geo}.", "{s} is a small city near the {geo}."),
    "org": ("{s} is an organisation active since {year}.", "{s} is a {orgdesc} based in its home city."),
    "work": ("{s} is {a_form} first issued in {year}.", "{s} is {a_form} about {topic}."),
}

DETAIL_TEMPLATES = {
    "person": (
        "{P} is often described as {adj} by colleagues.",
        "In {later}, {p} gave a lecture on {topic}.",
        "{P} keeps a large collection of field notebooks.",
        "Friends remember {poss} patience with students.",
    ),
    "place": (
        "It has a population of about {n} people.",
        "{s} is known for its {landmark}.",
        "A festival of {topic} is held there every spring.",
    ),
    "org": (
        "It employs about {n} people.",
        "{s} is known for its work on {topic}.",
        "Its annual report for {later} was widely read.",
    ),
    "work": (
        "The {form} runs to about {n} pages.",
        "Critics praised its treatment of {topic}.",
        "A revised edition appeared in {later}.",
    ),
}

OCCUPATIONS = ("a cartographer", "a botanist", "an engineer", "a historian", "a composer",
               "a surgeon", "an architect", "a translator", "a geologist", "a painter",
               "an economist", "a chemist")
TOPICS = ("river ecology", "maritime law", "glassmaking", "old trade routes", "bird migration",
          "folk music", "bridge design", "coastal weather", "printing history", "soil science")
ADJECTIVES = ("careful", "generous", "restless", "meticulous", "cheerful", "reserved")
GEOS = ("northern coast", "river plain", "eastern highlands", "southern lakes", "western hills")
LANDMARKS = ("covered market", "old harbour", "stone bridges", "clock tower", "botanical garden")
ORG_DESCS = ("research body", "trading house", "publishing concern", "charitable trust")
WORK_FORMS = ("novel", "play", "memoir", "essay collection", "poem cycle")
ORG_KINDS = ("Institute", "Guild", "Company", "Society", "Press", "Foundation", "Works",
             "Trust", "Collective", "Observatory")
WORK_NOUNS = ("Letters", "Chronicle", "Garden", "Lantern", "Atlas", "Sonnets", "Variations",
              "Testament", "Harvest", "Mirror")
PRONOUNS = (("she", "her"), ("he", "his"))

STOPWORDS = frozenset(
    "a an the of in on at to for by from with and or is are was were be been it its "
    "who which what whom whose this that there their his her they she he as into".split()
)

_WORD_RE = re.compile(r"[a-z0-9]+")
_PUNCT = str.maketrans("", "", string.punctuation)


def words_of(text: str) -> list[str]:
    """Lower-case alphanumeric words of a text."""
    return _WORD_RE.findall(text.lower())


def normalize_name(s: str) -> str:
    """SPEC §6 answer normalisation (lower-case, no punctuation or articles, single
    spaces): containment under it is what sub-EM scoring sees."""
    s = s.lower().translate(_PUNCT)
    return " ".join(w for w in s.split() if w not in ("a", "an", "the"))


def _template_vocab() -> frozenset[str]:
    texts: list[str] = []
    for group in (FACT_TEMPLATES, INTRO_TEMPLATES, DETAIL_TEMPLATES):
        for ts in group.values():
            texts.extend(ts)
    texts += list(QUESTION_PHRASE.values()) + list(QUESTION_FRAME.values())
    for lst in (OCCUPATIONS, TOPICS, ADJECTIVES, GEOS, LANDMARKS, ORG_DESCS, WORK_FORMS,
                ORG_KINDS, WORK_NOUNS):
        texts.extend(lst)
    texts += [w for pair in PRONOUNS for w in pair] + ["Document"]
    vocab = {w for t in texts for w in words_of(re.sub(r"\{[a-zA-Z]+\}", " ", t))}
    return frozenset(vocab | STOPWORDS)


# Words every paragraph or question may share: they carry no identity, so overlap in them
# is not a lexical shortcut. Invented name words are never in this set.
GENERIC_VOCAB = _template_vocab()


def distinctive_words(text: str) -> set[str]:
    """Words of `text` outside the generic vocabulary (and not numbers): in practice, the
    invented words of the names it mentions."""
    return {w for w in words_of(text) if w not in GENERIC_VOCAB and not w.isdigit()}


# ------------------------------------------------------------------------------- names

_ONSETS = ("b", "br", "c", "d", "dr", "f", "g", "gr", "h", "j", "k", "kr", "l", "m", "n",
           "p", "r", "s", "st", "t", "tr", "v", "w", "z", "th", "sh")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "i", "o", "ai", "ei", "ou")
_CODAS = ("", "", "n", "r", "l", "s", "m", "nd", "rn", "st", "th", "x", "v", "k")
# A few real words the syllable generator can produce; names must stay invented.
_REAL_WORDS = frozenset(
    "bear bird born bread brand data dear done drama free gear hand harm here home idea "
    "kind land lava line list long mark mars more most name near note only pain park "
    "rain rare read real rest ring road rome sand salt sea seal ship sold song star stone "
    "tent term test time toga tour tree true vast verb vital well west wind word work".split()
)


def invent_word(rng: random.Random, *, min_len: int = 4, max_len: int = 10) -> str:
    while True:
        n = rng.choice((2, 2, 2, 3))
        parts = []
        for i in range(n):
            onset = "" if i == 0 and rng.random() < 0.15 else rng.choice(_ONSETS)
            # Open syllables inside the word, a consonant only at its end: pronounceable
            # names like "Teravin" rather than consonant pile-ups.
            coda = rng.choice(_CODAS) if i == n - 1 else ""
            parts.append(onset + rng.choice(_VOWELS) + coda)
        w = "".join(parts)
        if min_len <= len(w) <= max_len:
            return w.capitalize()


class NameBook:
    """Hands out invented words and names; each word is used once, names are unique."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.words: set[str] = set()
        self.names: set[str] = set()

    def word_ok(self, w: str) -> bool:
        lw = w.lower()
        return w not in self.words and lw not in GENERIC_VOCAB and lw not in _REAL_WORDS

    def word(self) -> str:
        while True:
            w = invent_word(self.rng)
            if self.word_ok(w):
                self.words.add(w)
                return w

    def name(self, kind: str) -> str:
        while True:
            if kind == "person":
                name = f"{self.word()} {self.word()}"
            elif kind == "place":
                name = self.word()
            elif kind == "org":
                name = f"{self.word()} {self.rng.choice(ORG_KINDS)}"
            else:
                w = self.word()
                noun = self.rng.choice(WORK_NOUNS)
                name = f"The {w} {noun}" if self.rng.random() < 0.6 else f"{noun} of {w}"
            if name not in self.names:
                self.names.add(name)
                return name


def near_miss(name: str, rng: random.Random, taken: Iterable[str] = ()) -> str | None:
    """A decoy name one letter away from `name`: one vowel of one invented word changed.
    Returns None when no variant is free."""
    taken = set(taken)
    words = name.split()
    idx = [i for i, w in enumerate(words) if w.lower() not in GENERIC_VOCAB]
    options = []
    for i in idx:
        w = words[i]
        for j, ch in enumerate(w):
            if ch.lower() in "aeiou":
                for v in "aeiou":
                    if v != ch.lower():
                        nw = w[:j] + (v.upper() if ch.isupper() else v) + w[j + 1:]
                        options.append(" ".join(words[:i] + [nw] + words[i + 1:]))
    rng.shuffle(options)
    for cand in options:
        if cand not in taken and cand != name:
            return cand
    return None


# ------------------------------------------------------------------------------- world


@dataclass
class Entity:
    id: int  # index in World.entities; item-local decoys use negative ids
    kind: str
    name: str
    rel: dict[str, int] = field(default_factory=dict)  # relation -> object entity id
    attrs: dict[str, object] = field(default_factory=dict)


@dataclass
class World:
    seed: int
    scale: float
    entities: list[Entity]
    by_kind: dict[str, list[int]]
    inverse: dict[tuple[str, int], list[int]]  # (relation, object id) -> subject ids
    names: frozenset[str]
    words: frozenset[str]
    norm_names: tuple[str, ...]  # normalize_name of every entity name, entity order

    def get(self, eid: int) -> Entity:
        return self.entities[eid]


BASE_COUNTS = {"person": 2400, "place": 400, "org": 700, "work": 1500}


def _make_attrs(kind: str, rng: random.Random) -> dict[str, object]:
    a: dict[str, object] = {"year": rng.randint(1880, 1975), "topic": rng.choice(TOPICS)}
    if kind == "person":
        a["pronoun"] = rng.choice(PRONOUNS)
        a["occupation"] = rng.choice(OCCUPATIONS)
        a["adj"] = rng.choice(ADJECTIVES)
    elif kind == "place":
        a["geo"] = rng.choice(GEOS)
        a["landmark"] = rng.choice(LANDMARKS)
        a["n"] = rng.randrange(5, 900) * 1000
    elif kind == "org":
        a["orgdesc"] = rng.choice(ORG_DESCS)
        a["n"] = rng.randrange(12, 4000)
    else:
        a["form"] = rng.choice(WORK_FORMS)
        a["n"] = rng.randrange(80, 900)
    return a


@lru_cache(maxsize=4)
def build_world(seed: int = 0, scale: float = 1.0) -> World:
    """The world for a seed (cached; identical in every process). `scale` multiplies the
    entity counts (BASE_COUNTS: 5,000 entities at 1.0)."""
    rng = random.Random(f"revhop-world-{int(seed)}-{float(scale)!r}")  # 1 and 1.0 alike
    book = NameBook(rng)
    entities: list[Entity] = []
    by_kind: dict[str, list[int]] = {k: [] for k in KINDS}
    for kind in KINDS:
        for _ in range(max(8, int(BASE_COUNTS[kind] * scale))):
            e = Entity(len(entities), kind, book.name(kind), attrs=_make_attrs(kind, rng))
            entities.append(e)
            by_kind[kind].append(e.id)
    inverse: dict[tuple[str, int], list[int]] = {}
    for e in entities:
        for r in RELATIONS_OF[e.kind]:
            targets = by_kind[RELATIONS[r][1]]
            while True:
                t = rng.choice(targets)
                if t != e.id:
                    break
            e.rel[r] = t
            inverse.setdefault((r, t), []).append(e.id)
    return World(
        seed=seed, scale=scale, entities=entities, by_kind=by_kind, inverse=inverse,
        names=frozenset(book.names), words=frozenset(book.words),
        norm_names=tuple(normalize_name(e.name) for e in entities),
    )


# --------------------------------------------------------------------------- paragraphs

Fact = tuple[str, str, str]  # (subject name, relation, object name)


@dataclass(frozen=True)
class Paragraph:
    """One document: title (the subject's name), text, and the facts the text states."""

    title: str
    text: str
    facts: tuple[Fact, ...] = ()
    subject_id: int | None = None


def _fill(template: str, ent: Entity, rng: random.Random, obj: str = "") -> str:
    a = ent.attrs
    pron = a.get("pronoun", ("it", "its"))
    values = {
        "s": ent.name, "o": obj, "P": str(pron[0]).capitalize(), "p": pron[0], "poss": pron[1],
        "year": a.get("year", 1950), "n": a.get("n", 100), "topic": a.get("topic", "history"),
        "occupation": a.get("occupation", ""), "geo": a.get("geo", ""),
        "landmark": a.get("landmark", ""), "orgdesc": a.get("orgdesc", ""),
        "form": a.get("form", "work"), "adj": a.get("adj", ""),
    }
    values["a_form"] = ("an " if str(values["form"])[0] in "aeiou" else "a ") + str(values["form"])
    # Later events (a job, a lecture, a new edition) happen 18-45 years after the
    # entity's own year (birth, founding, first issue).
    values["later"] = int(values["year"]) + rng.randint(18, 45)
    text = template.format(**values)
    return text[0].upper() + text[1:]


def render_entity(
    world: World, ent: Entity, rng: random.Random, *, names: dict[int, str] | None = None
) -> Paragraph:
    """An encyclopedia-style paragraph about `ent`: an introduction, one sentence per
    relation (random wording, random order) and 0-2 neutral details. `names` resolves
    object ids not in the world (item-local decoys)."""
    def name_of(eid: int) -> str:
        if names and eid in names:
            return names[eid]
        return world.entities[eid].name

    sentences = [_fill(rng.choice(INTRO_TEMPLATES[ent.kind]), ent, rng)]
    body: list[str] = []
    facts: list[Fact] = []
    for r, obj in ent.rel.items():
        oname = name_of(obj)
        body.append(_fill(rng.choice(FACT_TEMPLATES[r]), ent, rng, oname))
        facts.append((ent.name, r, oname))
    for t in rng.sample(DETAIL_TEMPLATES[ent.kind], rng.randint(0, 2)):
        body.append(_fill(t, ent, rng))
    rng.shuffle(body)
    # The introduction always comes first, so the subject is named before any sentence
    # that refers to it by pronoun.
    return Paragraph(ent.name, " ".join(sentences + body), tuple(facts), ent.id)
