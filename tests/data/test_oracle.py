"""Oracle traces: replies that follow the protocol, keep exactly the evidence, recall across
a bridge, answer the gold, and sit on the prompts the agent itself builds."""

from __future__ import annotations

import json

import pytest

from rememr1.agent import Agent, AgentConfig
from rememr1.data.oracle import TokenizerBackend, oracle_steps, read_traces
from rememr1.data.revhop import make_item
from rememr1.data.tokens import make_token_counter
from rememr1.errors import InputError
from rememr1.protocol import answer_of, parse_reply



class CharTokenizer:
    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids) -> str:
        return "".join(chr(i) for i in ids)


def _item(order: str, hops: int = 2, index: int = 0, length: int = 2048) -> dict:
    return make_item(seed=3, length=length, hops=hops, order=order, index=index,
                     counter=make_token_counter(None))


def _section(row: dict) -> str:
    return row["messages"][0]["content"].split("<section>\n", 1)[1].rsplit("\n</section>", 1)[0]


def _agent(chunk_chars: int) -> Agent:
    return Agent(TokenizerBackend(CharTokenizer()), AgentConfig(method="rememr1", chunk_size=chunk_chars))


@pytest.mark.parametrize("order,hops", [("reverse", 2), ("forward", 2), ("reverse", 3), ("random", 3)])
def test_replies_keep_evidence_and_open_candidates_only_and_answer_the_gold(order, hops):
    rec = _item(order, hops)
    rows = oracle_steps(_agent(1500), rec)
    evidence = {f["sentence"] for f in rec["evidence_facts"]}
    later = {f["relation"] for f in rec["evidence_facts"] if f["hop"] > 1}
    candidates = {c["sentence"]: c for c in rec["candidate_facts"]}
    memory_rows, final = rows[:-1], rows[-1]
    assert final["kind"] == "final" and answer_of(final["reply"]) == rec["answers"][0]
    for row in memory_rows:
        parsed = parse_reply(row["reply"])
        assert parsed.n_update == 1 and parsed.update_closed
        section = row["messages"][0]["content"].split("<section>")[1]
        for line in parsed.update.strip().splitlines():  # no filler: evidence or an open candidate
            if any(line.endswith(n) for n in evidence) or line.startswith(("No ", "Nothing")):
                continue
            match = [c for s, c in candidates.items() if line.endswith(s)]
            assert match and match[0]["relation"] in later, line
            assert match[0]["sentence"][-40:] in section  # noted from the section at hand (its end at least)
    if final["complete"]:  # every hop resolved: the last memory is exactly the chain
        last = parse_reply(memory_rows[-1]["reply"]).update.strip().splitlines()
        resolved_late = len(last) < len(evidence)  # the last hop came in through the final recall
        assert resolved_late or [line for line in last if not any(line.endswith(n) for n in evidence)] == []


def test_two_hop_chains_are_always_reachable():
    for order in ("reverse", "forward"):
        for i in range(4):
            assert oracle_steps(_agent(1500), _item(order, 2, index=i))[-1]["complete"]


def test_candidates_are_kept_only_while_the_bridge_is_unknown():
    rec = _item("reverse")
    rows = oracle_steps(_agent(700), rec)
    hop1 = rec["evidence_facts"][0]["sentence"]
    found = next(r["step"] for r in rows if hop1 in parse_reply(r["reply"]).update)
    relation = rec["evidence_facts"][1]["relation"]
    others = {c["sentence"] for c in rec["candidate_facts"]} - {f["sentence"] for f in rec["evidence_facts"]}
    before = [parse_reply(r["reply"]).update for r in rows[:found]]
    after = [parse_reply(r["reply"]).update for r in rows[found:-1]]
    assert any(s in u for u in before for s in others)  # other founders/birthplaces... noted
    assert not any(s in u for u in after for s in others)  # and dropped once the bridge is known
    assert all(c["relation"] == relation for c in rec["candidate_facts"])


def test_prompts_are_the_ones_the_agent_builds(scripted):
    """Replaying the oracle's replies through a real Agent run reproduces every stored
    prompt byte for byte (same templates, chunking and transition)."""
    rec = _item("reverse")
    rows = oracle_steps(_agent(1200), rec)
    replies = iter(r["reply"] for r in rows)
    backend = scripted(lambda prompt, i: next(replies))
    Agent(backend, AgentConfig(method="rememr1", chunk_size=1200)).answer(rec["context"], rec["input"])
    assert backend.prompts == [r["messages"][-1]["content"] for r in rows]


def test_recall_names_the_bridge_and_finds_the_earlier_note():
    rec = _item("reverse")
    bridge = rec["bridge_entities"][0]
    agent = _agent(700)
    rows = oracle_steps(agent, rec)
    queries = [(r["step"], parse_reply(r["reply"]).recall) for r in rows if parse_reply(r["reply"]).recall]
    assert [q for _, q in queries] == [bridge]
    # The recall is written at the step that holds hop 1, after hop 2 was noted.
    step = queries[0][0]
    hop1 = rec["evidence_facts"][0]["sentence"]
    assert hop1 in rows[step]["messages"][0]["content"]
    # The next prompt shows the earlier memory (holding hop 2) as recalled.
    hop2 = rec["evidence_facts"][1]["sentence"]
    shown = rows[step + 1]["messages"][0]["content"]
    recalled = shown.split("<recalled_memory>")[1].split("</recalled_memory>")[0]
    assert hop2 in recalled


def test_forward_order_needs_no_recall():
    """In forward order the bridge is known before its hop arrives: memory carries hop 1
    and hop 2 is noted when it appears, with no recall."""
    rec = _item("forward")
    rows = oracle_steps(_agent(700), rec)
    assert [parse_reply(r["reply"]).recall for r in rows if parse_reply(r["reply"]).recall] == []
    hop1, hop2 = (f["sentence"] for f in rec["evidence_facts"])
    step2 = next(r["step"] for r in rows if hop2 in parse_reply(r["reply"]).update)
    assert hop1 in rows[step2]["messages"][0]["content"].split("<memory>")[1]


@pytest.mark.parametrize("order", ["forward", "reverse"])
def test_sentence_cut_by_a_section_edge_is_noted_once_complete(order):
    rec = _item(order)
    rows = oracle_steps(_agent(60), rec)  # sections shorter than many sentences
    assert len(rows) > 30
    for f in rec["evidence_facts"]:  # noted (as the chain or as a candidate) at one step
        noted = [r["step"] for r in rows[:-1] if f["sentence"] in parse_reply(r["reply"]).update]
        assert noted and noted == list(range(noted[0], noted[0] + len(noted)))
        read = "".join(_section(r) for r in rows[:noted[0] + 1])
        assert f["sentence"] in read and f["sentence"] not in read[:-len(_section(rows[noted[0]]))]
    if order == "forward":
        last = parse_reply(rows[-2]["reply"]).update
        assert all(f["sentence"] in last for f in rec["evidence_facts"])


def test_wording_varies_across_items():
    thoughts = set()
    for i in range(6):
        for row in oracle_steps(_agent(1500), _item("reverse", index=i)):
            thoughts.add(parse_reply(row["reply"]).thinking.split(":")[0][:20])
    assert len(thoughts) >= 5


def test_old_files_without_evidence_facts_are_refused():
    rec = _item("reverse")
    del rec["evidence_facts"]
    with pytest.raises(InputError, match="generate them again"):
        oracle_steps(_agent(1500), rec)


def test_read_traces_rejects_malformed_lines(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps({"messages": [], "reply": "x"}) + "\n{not json\n")
    with pytest.raises(InputError, match=r"t.jsonl:2"):
        read_traces([p])
    with pytest.raises(InputError, match="not found"):
        read_traces([tmp_path / "missing.jsonl"])
