"""Hand-computed fixtures for every official-code switch (SPEC §9), one table.

`TABLE` names, for each switch, the SPEC line it reproduces and the test below that checks
it. Each fixture computes the official result by hand and also checks that our default
differs from it, so it fails if the switch does nothing (or does what the default does).
`test_table_covers_every_switch` keeps the table complete.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rememr1.agent import METHODS, Agent, AgentConfig, AgentState, transition
from rememr1.backends.base import SamplingParams
from rememr1.compat import AgentCompat, agent_compat
from rememr1.memory import make_retriever
from rememr1.metrics import aggregate, normalize_answer, score, score_official
from rememr1.protocol import NO_RECALL, answer_of, official_memory
from rememr1.records import FINAL_STEP, MEMORY_STEP, RecallHit, StepRecord
from rememr1.rl.rewards import RewardConfig, callback_bonus, episode_rewards, format_reward, memory_gain
from rememr1.rl.advantages import AdvantageConfig, group_advantages
from rememr1.rl.rewards import EpisodeRewards

# (SPEC §9 line, switch, test that checks it)
TABLE = [
    ("Memory text: the whole reply minus <recall> spans, always", "agent.compat.whole_reply_memory",
     "test_whole_reply_memory"),
    ("The model's own tags inside that memory are not defused (document text still is)",
     "agent.compat.verbatim_memory", "test_verbatim_memory"),
    ("History: a de-duplicated set of memories", "agent.compat.memory_set", "test_memory_set"),
    ("Evaluation adds the new memory first, so the current memory is a candidate",
     "agent.compat.recall_current", "test_recall_current"),
    ("Retrieval: TF-IDF tokenised with the policy model's tokenizer",
     "agent.compat.tfidf_model_tokens", "test_tfidf_model_tokens"),
    ("... and a top-1 is returned even when every similarity is zero",
     "agent.compat.recall_at_zero", "test_recall_at_zero"),
    ("Recall query: first match of a greedy single-line <recall>(.+)</recall>",
     "agent.compat.official_recall", "test_official_recall"),
    ("Placeholder-copying recall is no query by default; official mode retrieves it",
     "agent.compat.official_recall", "test_placeholder_recall"),
    ("Scoring: dropped only when the generation failed; whitespace-only scores 0; first gold; "
     "</think>; \\boxed X$; unclosed box gives nothing", "eval --scoring official",
     "test_official_scoring_fixtures"),
    ("Training outcome reward: last 300 chars, lower-cased, MATH strip_string, max over golds",
     "reward.official_outcome", "test_official_outcome"),
    ("Memory and format reward from single-line <update>(.*?)</update> matches",
     "reward.update_tag_rewards", "test_update_tag_rewards"),
    ("(§3) the previous-memory term never matches: r_mem is plain recall",
     "reward.mem_gain_without_previous", "test_mem_gain_without_previous"),
    ("(§3) answer aliases averaged instead of max", "reward.average_aliases", "test_average_aliases"),
    ("(§3) word matching is case-sensitive substring search",
     "reward.case_sensitive_substring_match", "test_case_sensitive_substring_match"),
    ("(§3) no format reward for <recall>", "reward.no_recall_format", "test_no_recall_format"),
    ("Callback reward: max(0, R(recalled + prompt) - R(prompt))", "reward.callback_against_prompt",
     "test_callback_against_prompt"),
    ("Doubled state advantage only without std scaling", "advantage.double_state",
     "test_double_state_advantage"),
    ("A group of one rollout gets its raw score (mean 0, std 1)", "advantage.singleton_raw",
     "test_singleton_raw_advantage"),
]


def test_table_covers_every_switch():
    named = {switch for _, switch, _ in TABLE}
    for name in AgentCompat.names():
        assert f"agent.compat.{name}" in named, name
    for f in dataclasses.fields(RewardConfig):
        if f.type in (bool, "bool"):
            assert f"reward.{f.name}" in named, f.name
    for *_, test in TABLE:
        assert callable(globals().get(test)), test


# ------------------------------------------------------------------------------ helpers

REMEMR1 = METHODS["rememr1"]


def step(state, reply, **switches):
    """One transition with the retriever the agent builds for these switches."""
    retriever = make_retriever("tfidf", top_at_zero=switches.get("recall_at_zero", False))
    return transition(state, reply, method=REMEMR1, question="q", retriever=retriever,
                      compat=AgentCompat(**switches))


def run_agent(scripted, replies, doc="x" * 30, **switches):
    """An episode of 3 chunks of 10 characters with scripted replies; returns (result, prompts)."""
    it = iter(replies)
    be = scripted(lambda p, i: next(it))
    agent = Agent(be, AgentConfig(chunk_size=10, compat=AgentCompat(**switches)), SamplingParams(max_new_tokens=8))
    return agent.answer(doc, "q?"), be.prompts


def memory_block(prompt: str) -> str:
    return re.search(r"<memory>\n(.*?)\n</memory>", prompt, re.S).group(1)


def recalled_block(prompt: str) -> str:
    return re.search(r"<recalled_memory>\n(.*?)\n</recalled_memory>", prompt, re.S).group(1)


# ------------------------------------------------------------------------------ agent


def test_whole_reply_memory():
    reply = "<thinking>Curie met Pierre</thinking>\n<update>Curie: physicist</update>\n<recall>who\nmet</recall> end"
    _, default = step(AgentState(), reply)
    _, official = step(AgentState(), reply, whole_reply_memory=True)
    assert default.memory == "Curie: physicist"
    assert official.memory == "<thinking>Curie met Pierre</thinking>\n<update>Curie: physicist</update>\n end"
    # case-sensitive: an upper-case block is not a recall span for the official code
    assert official_memory("a <RECALL>x</RECALL> b") == "a <RECALL>x</RECALL> b"


def test_verbatim_memory(scripted):
    replies = ["<update>m1</update>", "<update>x</update>", "<update>m3</update>", "\\boxed{a}"]
    doc = "<update>doc</update>" + "y" * 10  # 30 characters: three chunks
    _, default = run_agent(scripted, list(replies), doc=doc, whole_reply_memory=True)
    _, official = run_agent(scripted, list(replies), doc=doc, whole_reply_memory=True,
                            verbatim_memory=True)
    assert memory_block(default[1]) == "&lt;update>m1&lt;/update>"
    assert memory_block(official[1]) == "<update>m1</update>"
    # document text stays defused either way
    assert "<update>do" not in official[0] and "&lt;update>do" in official[0]
    # an empty memory after the first step is shown empty, not as the placeholder
    _, empty = run_agent(scripted, ["", "<update>b</update>", "<update>c</update>", "\\boxed{a}"],
                         whole_reply_memory=True, verbatim_memory=True)
    assert memory_block(empty[0]) == "No previous memory" and memory_block(empty[1]) == ""


def test_memory_set():
    replies = ("<update>alpha</update>", "<update>beta</update>", "<update>alpha</update>")
    s = AgentState()
    for reply in replies:
        s, _ = step(s, reply, memory_set=True)
    assert s.history == ("alpha", "beta") and s.history_steps == (0, 1)
    d = AgentState()
    for reply in replies:
        d, _ = step(d, reply)
    assert d.history == ("alpha", "beta", "alpha")
    # a hit on a de-duplicated memory names the step that first wrote it
    _, tr = step(s, "<update>gamma</update><recall>alpha</recall>", memory_set=True)
    assert [(h.text, h.step) for h in tr.hits] == [("alpha", 0)]


def test_recall_current():
    reply = "<update>the lens is in Varrow</update><recall>lens Varrow</recall>"
    _, default = step(AgentState(), reply)
    _, official = step(AgentState(), reply, recall_current=True)
    assert default.hits == ()  # nothing was written before step 0
    assert [(h.text, h.step) for h in official.hits] == [("the lens is in Varrow", 0)]


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from rememr1.backends.builtin import builtin_gguf_path
    from rememr1.backends.llamacpp import load_vocab
    from rememr1.backends.tokenization import LlamaTokenizer

    return LlamaTokenizer(load_vocab(builtin_gguf_path()))


def test_tfidf_model_tokens(smollm2_tokenizer):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics.pairwise import cosine_similarity

    memories = ["the keeper of the lighthouse", "a ship carried cargo"]
    query = "lightkeeper"
    words = make_retriever("tfidf")
    pieces = make_retriever("tfidf", tokenizer=smollm2_tokenizer)
    for r in (words, pieces):
        for m in memories:
            r.add(m)
    assert words.search(query) == []  # no word in common
    hits = pieces.search(query, k=2)
    assert [h.step for h in hits] == [0]  # pieces "light" + "keeper"; "Ġkeeper" minus its marker
    # the official vectorizer, refitted on the memories, gives the same score
    vec = TfidfVectorizer(tokenizer=lambda t: [p.replace("\u0120", "") for p in smollm2_tokenizer.pieces(t.lower())],
                          token_pattern=None)
    vec.fit(memories)
    sims = cosine_similarity(vec.transform([query]), vec.transform(memories)).ravel()
    assert hits[0].score == pytest.approx(sims[0])
    assert sims[1] == 0.0


def test_recall_at_zero():
    history = ("alpha", "beta")
    state = AgentState(step=2, memory="beta", history=history)
    _, default = step(state, "<update>c</update><recall>zebra</recall>")
    _, official = step(state, "<update>c</update><recall>zebra</recall>", recall_at_zero=True)
    assert default.hits == ()
    assert [(h.text, h.score) for h in official.hits] == [("beta", 0.0)]  # ties: the later memory


def test_official_recall():
    two = "<recall>a</recall> x <recall>b</recall>"
    _, default = step(AgentState(history=("a b",)), "<update>m</update>" + two)
    _, official = step(AgentState(history=("a b",)), "<update>m</update>" + two, official_recall=True)
    assert default.query == "a"
    assert official.query == "a</recall> x <recall>b"  # greedy, one line
    multi = "<update>m</update><recall>\nwho\n</recall>"
    assert step(AgentState(), multi)[1].query == "who"
    assert step(AgentState(), multi, official_recall=True)[1].query is None  # no DOTALL
    # thinking is not skipped by the official pattern
    thought = "<thinking><recall>draft</recall></thinking><update>m</update>"
    assert step(AgentState(), thought)[1].query is None
    assert step(AgentState(), thought, official_recall=True)[1].query == "draft"


def test_placeholder_recall():
    state = AgentState(step=1, memory="m0", history=("m0 was recalled",))
    reply = f"<update>m1</update><recall>{NO_RECALL}</recall>"
    for copied in (NO_RECALL, "none", "  ", "No previous memory", "NONE."):
        _, tr = step(state, f"<update>m1</update><recall>{copied}</recall>")
        assert tr.query is None and tr.hits == (), copied
    _, off = step(state, reply, official_recall=True, recall_at_zero=True)
    assert off.query == NO_RECALL and [h.text for h in off.hits] == ["m0 was recalled"]


# ------------------------------------------------------------------------------ scoring


def restated_official_box(s: str):
    """The MATH last-box rule, restated independently for the property test below."""
    if "\\boxed " in s:
        return s.split("\\boxed ")[-1].split("$")[0]
    i = s.rfind("\\boxed")
    if i < 0:
        return None
    depth, close = 0, None
    for j in range(i, len(s)):
        if s[j] == "{":
            depth += 1
        if s[j] == "}":
            depth -= 1
            if depth == 0:
                close = j
                break
    if close is None:
        return None
    box = s[i : close + 1]
    return box[7:-1] if box.startswith("\\boxed{") else None


def restated_official_accuracy(items):
    """The official scorer as its script reads: drop "" outputs (failures become ""); strip;
    after the last </think> or whole; box; first gold; sub-EM 0 for a falsy prediction."""
    kept = []
    for output, golds, failed in items:
        output = "" if failed else output
        if output == "":
            continue
        response = output.strip()
        pred = response.split("</think>")[-1].strip() if "</think>" in response else response
        ans = restated_official_box(pred) if pred else restated_official_box(response)
        if not ans:
            kept.append(0)
            continue
        a, g = normalize_answer(ans), normalize_answer(golds[0])
        kept.append(int(g in a or a in g))
    return (100.0 * sum(kept) / len(kept)) if kept else None, len(kept)


PIECES = ["", " ", "\n", "\\boxed{", "\\boxed ", "}", "{", "$", "</think>", "<think>", "Paris",
          "paris", "Rome", "the", ".", "\\text{", "x"]
replies = st.lists(st.sampled_from(PIECES), max_size=12).map("".join)
golds = st.lists(st.sampled_from(["Paris", "Rome", "the paris", "x y"]), min_size=1, max_size=3)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(replies, golds, st.booleans()), max_size=12))
def test_official_aggregate_matches_restated_rule(items):
    agg = aggregate([score_official(r, g, failed=f) for r, g, f in items])
    accuracy, n = restated_official_accuracy(items)
    assert agg["n"] == n and agg["n_total"] == len(items)
    assert agg["accuracy"] == (None if accuracy is None else pytest.approx(accuracy))


def test_official_scoring_fixtures():
    cases = [  # (reply, golds, failed, official sub-EM or "dropped", strict sub-EM)
        (r"\boxed{Paris}", ["Paris"], False, 1.0, 1.0),
        ("Paris, I think.", ["Paris"], False, 0.0, 0.0),  # no box: counted, 0 (was dropped)
        (r"\boxed{}", ["Paris"], False, 0.0, 0.0),  # empty box: 0 (was a sub-EM hit)
        ("   ", ["Paris"], False, 0.0, 0.0),  # whitespace-only: counted, 0
        ("", ["Paris"], False, "dropped", 0.0),  # empty output = failed request
        (r"\boxed{Paris}", ["Paris"], True, "dropped", 1.0),  # error in some step
        (r"\boxed{Lyon}", ["Paris", "Lyon"], False, 0.0, 1.0),  # first gold only
        (r"<think>\boxed{Rome}</think>\boxed{Paris}", ["Paris"], False, 1.0, 1.0),
        (r"<think>x</think>the answer: \boxed{Rome", ["Rome"], False, 0.0, 0.0),  # unclosed
        (r"\boxed Paris$ is it", ["Paris"], False, 1.0, 0.0),  # the "\boxed X$" spelling
        (r"\boxed{\text{Paris}}", ["Paris"], False, 1.0, 1.0),  # "textparis" contains "paris"
    ]
    for reply, gold, failed, official, strict in cases:
        o = score_official(reply, gold, failed=failed)
        assert (o["dropped"] if official == "dropped" else o["sub_em"] == official), (reply, o)
        assert score(answer_of(reply), gold)["sub_em"] == strict, reply
    agg = aggregate([score_official(r, g, failed=f) for r, g, f, *_ in cases])
    assert (agg["n"], agg["n_dropped"]) == (9, 2)
    assert agg["accuracy"] == pytest.approx(100 * 4 / 9)
    # the official scorer keeps "\text{...}" (EM 0); our answer rule unwraps it (EM 1)
    assert score_official(r"\boxed{\text{Paris}}", ["Paris"])["em"] == 0.0
    assert score(answer_of(r"\boxed{\text{Paris}}"), ["Paris"])["em"] == 1.0


# ------------------------------------------------------------------------------ rewards

CURIE = ["Marie Curie"]


def rec(kind=MEMORY_STEP, *, reply="", before="", after="", chunk="", hits=(), prompt="",
        n_update=1, n_recall=0, n_boxed=0, answer=None) -> StepRecord:
    return StepRecord(step=0, kind=kind, messages=[{"role": "user", "content": prompt}], reply=reply,
                      finish_reason="stop", prompt_tokens=0, completion_tokens=0, seconds=0.0,
                      chunk=chunk, memory_before=before, memory_after=after,
                      recall_hits=[RecallHit(h, 0, 1.0) for h in hits],
                      recall_query="q" if hits else None, n_update=n_update, n_recall=n_recall,
                      n_boxed=n_boxed, answer=answer)


def test_official_outcome():
    cfg = RewardConfig(official_outcome=True)

    def outcome(reply, golds, c=None):
        final = rec(FINAL_STEP, reply=reply, answer=answer_of(reply), n_boxed=1)
        return episode_rewards([final], golds, c).outcome

    # spaces removed on both sides by strip_string: "newyork" equals "New York"
    assert outcome(r"\boxed{newyork}", ["New York"], cfg) == 1.0
    assert outcome(r"\boxed{newyork}", ["New York"]) == 0.0
    # no punctuation or article removal: "the Beatles" is not "Beatles"
    assert outcome(r"\boxed{the Beatles}", ["Beatles"], cfg) == 0.0
    assert outcome(r"\boxed{the Beatles}", ["Beatles"]) == 1.0
    # only the last 300 characters are searched; max over the golds
    early = r"\boxed{Paris}" + " more words" * 30
    assert (outcome(early, ["Paris"], cfg), outcome(early, ["Paris"])) == (0.0, 1.0)
    assert outcome(r"... \boxed{LYON}", ["Paris", "lyon"], cfg) == 1.0
    # F1 without normalisation: "the big apple" vs "big apple" -> P 2/3, R 1 -> 0.8
    f1 = RewardConfig(official_outcome=True, outcome_metric="f1")
    assert outcome(r"\boxed{The Big Apple}", ["big apple"], f1) == pytest.approx(0.8)


def test_update_tag_rewards():
    cfg = RewardConfig(update_tag_rewards=True)
    # multi-line update: the agent reads it, the official single-line pattern does not
    multi = rec(reply="<update>\nMarie Curie\n</update>", after="Marie Curie")
    assert (memory_gain(multi, CURIE), format_reward(multi)) == (1.0, 1.0)
    assert (memory_gain(multi, CURIE, cfg), format_reward(multi, cfg)) == (0.0, 0.0)
    # the memory kept (here the whole reply) is not what the reward reads: first match only
    reply = "<thinking>Marie Curie?</thinking>\n<update>Curie</update>\n<update>Marie</update>"
    whole = rec(reply=reply, after="Marie Curie?\nCurie\nMarie", n_update=2)
    assert memory_gain(whole, CURIE) == 1.0
    assert memory_gain(whole, CURIE, cfg) == 0.5
    assert format_reward(whole, cfg) == 0.0  # two non-empty matches
    # final step: exactly one greedy single-line \boxed{(.+)}: two boxes on a line count once
    two = rec(FINAL_STEP, reply=r"\boxed{a} or \boxed{b}", n_boxed=2, answer="b")
    assert (format_reward(two), format_reward(two, cfg)) == (0.0, 1.0)


def test_mem_gain_without_previous():
    keep = rec(before="Marie Curie", after="Marie Curie, physicist")
    assert memory_gain(keep, CURIE) == 0.0
    assert memory_gain(keep, CURIE, RewardConfig(mem_gain_without_previous=True)) == 1.0


def test_average_aliases():
    s = rec(after="born in the united states")
    assert memory_gain(s, ["United States", "USA"]) == 1.0
    assert memory_gain(s, ["United States", "USA"], RewardConfig(average_aliases=True)) == 0.5


def test_case_sensitive_substring_match():
    s = rec(after="Martin lived in paris,")
    cfg = RewardConfig(case_sensitive_substring_match=True)
    assert memory_gain(s, ["art"]) == 0.0 and memory_gain(s, ["art"], cfg) == 1.0
    assert memory_gain(s, ["Paris"]) == 1.0 and memory_gain(s, ["Paris"], cfg) == 0.0


def test_no_recall_format():
    s = rec(after="notes", n_recall=2)
    assert format_reward(s) == 0.0
    assert format_reward(s, RewardConfig(no_recall_format=True)) == 1.0


def test_callback_against_prompt():
    cfg = RewardConfig(callback_against_prompt=True)
    prompt = "Question: who found polonium? Memory: Curie"  # R = 1/2
    s = rec(prompt=prompt, before="Curie", hits=("Marie Skłodowska",))
    assert callback_bonus(s, CURIE, cfg) == pytest.approx(0.5)  # R(hit + prompt) = 1
    # (the superseded form max(0, R(hit) - R(prompt)) gives 1/2 - 1/2 = 0 here)
    seen = rec(prompt="Question: who found polonium?", chunk="", hits=("Curie",))
    assert callback_bonus(seen, CURIE, cfg) == pytest.approx(0.5)
    assert callback_bonus(seen, CURIE) == pytest.approx(0.5)
    already = rec(prompt=prompt, before="Curie", hits=("Curie",))
    assert callback_bonus(already, CURIE, cfg) == 0.0


def _eps(outcomes, states):
    return [EpisodeRewards(outcome=o, answer=None, steps=list(range(len(s))),
                           kinds=[MEMORY_STEP] * (len(s) - 1) + [FINAL_STEP],
                           memory_gain=[0.0] * len(s), callback=[0.0] * len(s), format=[0.0] * len(s),
                           state=s, recalled=[False] * len(s)) for o, s in zip(outcomes, states)]


def test_double_state_advantage():
    eps = _eps([1.0, 0.0], [[1.0, 1.0], [0.0, 1.0]])
    # A_out = [0.5, -0.5]; step 0 state [1, 0] -> centred [0.5, -0.5]
    plain = group_advantages(eps)
    doubled = group_advantages(eps, AdvantageConfig(double_state=True))
    assert plain[0][0] == pytest.approx(0.8 * 0.5 + 0.2 * 0.5)
    assert doubled[0][0] == pytest.approx(0.8 * 0.5 + 0.4 * 0.5)
    # with std scaling the factor cancels: (2r - 2m) / (2s + eps) ~ (r - m) / s
    a = group_advantages(eps, AdvantageConfig(scale_by_std=True))
    b = group_advantages(eps, AdvantageConfig(scale_by_std=True, double_state=True))
    assert np.allclose(a, b, atol=1e-5)


def test_singleton_raw_advantage():
    one = _eps([1.0], [[0.5, 2.0]])
    assert group_advantages(one) == [[0.0, 0.0]]
    raw = group_advantages(one, AdvantageConfig(singleton_raw=True))
    assert raw[0] == pytest.approx([0.8 * 1.0 + 0.2 * 0.5, 0.8 * 1.0 + 0.2 * 2.0])
    # official: raw and doubled together give 2r for the state part
    both = group_advantages(one, AdvantageConfig(singleton_raw=True, double_state=True))
    assert both[0][0] == pytest.approx(0.8 + 0.2 * 1.0)
    # a step that only one of two rollouts reached is a group of one too
    ragged = _eps([1.0, 0.0], [[1.0, 3.0, 1.0], [1.0, 1.0]])
    ragged[1].kinds = [MEMORY_STEP, MEMORY_STEP]
    ragged[0].kinds = [MEMORY_STEP, MEMORY_STEP, FINAL_STEP]
    adv = group_advantages(ragged, AdvantageConfig(alpha=0.0, singleton_raw=True))
    assert adv[0][2] == pytest.approx(1.0)
    assert group_advantages(ragged, AdvantageConfig(alpha=0.0))[0][2] == 0.0


# ------------------------------------------------------------------------------ presets


def test_presets_and_overrides():
    ev = agent_compat("official", training=False)
    tr = agent_compat("official", training=True)
    assert ev.recall_current and not tr.recall_current  # the two official timings
    assert all(getattr(tr, n) for n in AgentCompat.names() if n != "recall_current")
    assert not agent_compat("none", training=False).active()
    assert not agent_compat("official", training=False, memory_set=False).memory_set
    assert agent_compat("none", training=False, memory_set=True).active() == ["memory_set"]
    from rememr1.errors import InputError

    with pytest.raises(InputError, match="preset"):
        agent_compat("offical", training=False)


def test_train_config_preset():
    from rememr1.errors import InputError
    from rememr1.rl.config import build_config

    cfg = build_config({"compat": "official", "reward.average_aliases": False})
    assert cfg.reward == RewardConfig.official(average_aliases=False)
    assert cfg.agent.compat == AgentCompat.official(training=True)
    assert build_config({}).reward == RewardConfig() and not build_config({}).agent.compat.active()
    with pytest.raises(InputError, match="compat"):
        build_config({"compat": "bogus"})
    with pytest.raises(InputError, match="tfidf"):
        build_config({"compat": "official", "agent.retriever": "bm25"})


def test_official_preset_episode(scripted):
    """The evaluation preset through `Agent`: whole-reply memories, the current memory as
    a candidate, a top-1 at zero similarity, verbatim memories in the next prompt."""
    replies = iter([
        "<thinking>first</thinking><update>lens made in Orrin</update><recall>zzzqqq</recall>",
        "<update>ship Maren</update><recall>lens Orrin</recall>",
        "<update>ship Maren</update>",
        r"\boxed{Orrin}",
    ])
    be = scripted(lambda p, i: next(replies))
    agent = Agent(be, AgentConfig(chunk_size=10, compat=agent_compat("official", training=False)),
                  SamplingParams(max_new_tokens=8))
    res = agent.answer("x" * 30, "Who made the lens?")
    mem = [r.memory_after for r in res.steps[:-1]]
    assert mem[0] == "<thinking>first</thinking><update>lens made in Orrin</update>"
    # step 0: "zzzqqq" matches nothing, yet the only candidate (its own memory) comes back
    assert [(h.step, h.score) for h in res.steps[0].recall_hits] == [(0, 0.0)]
    assert [h.step for h in res.steps[1].recall_hits] == [0]
    assert "<update>lens made in Orrin</update>" in be.prompts[1]  # verbatim
    # step 2 repeats step 1's memory: the set keeps one copy
    assert res.answer == "Orrin"
