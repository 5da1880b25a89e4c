"""The lines of an evaluation (`eval.lines`): result lines, step lines, diagnostics, the reader."""

import json

from rememr1.eval import memory_diagnostics
from rememr1.records import RecallHit, StepRecord


def test_memory_diagnostics():
    def rec(step, before, after, recalled=()):
        return StepRecord(step=step, kind="memory", messages=[], reply="", finish_reason="stop",
                          prompt_tokens=1, completion_tokens=1, seconds=0.0,
                          memory_before=before, memory_after=after,
                          recalled_in=[RecallHit(t, 0, 1.0) for t in recalled])

    steps = [
        rec(0, "", "Maren Isle built by Tolland Yard"),
        rec(1, "Maren Isle built by Tolland Yard", "lens on the Maren Isle"),
        rec(2, "lens on the Maren Isle", "lens on the Maren Isle",
            recalled=["Maren Isle built by Tolland Yard"]),
    ]
    d = memory_diagnostics(steps, {"bridge_1": "Maren Isle", "answer": "Tolland Yard"})
    assert d["bridge_1"] == {"name": "Maren Isle", "entered": 0, "at_end": True, "recalled_back": False}
    assert d["answer"] == {"name": "Tolland Yard", "entered": 0, "at_end": False, "recalled_back": True}


def test_steps_line_marks_well_formed_updates(scripted):
    from rememr1.agent import Agent, AgentConfig
    from rememr1.eval import steps_line

    replies = iter(["<update>kept one</update>", "no tags at all", "<update>a</update><update>b</update>",
                    "<update>cut off", "\\boxed{x}"])
    agent = Agent(scripted(lambda prompt, i: next(replies)), AgentConfig(chunk_size=10))
    result = agent.answer("word " * 8, "Which word?")
    line = steps_line("id", result.steps, {})
    assert [s["well_formed"] for s in line["steps"]] == [True, False, False, False, True]


def test_one_result_line_builder_for_finished_and_failed_items(scripted):
    """An item that ran and one that could not get lines with the same keys, in the same
    order, from `result_line`; the failed one has no answer, no cost and counts as wrong."""
    from types import SimpleNamespace

    from rememr1.agent import Agent, AgentConfig
    from rememr1.eval import failed_line, result_line

    sample = SimpleNamespace(id="q1", question="Which word?", answers=["x"],
                             metadata={"length": 4096, "data_source": "revhop"})
    agent = Agent(scripted(lambda prompt, i: "<update>m</update>" if "<section>" in prompt else "\\boxed{x}"),
                  AgentConfig(chunk_size=10))
    ran = result_line(sample, agent.answer("word " * 8, sample.question), method="rememr1", model="m", source="f.json")
    failed = failed_line(sample, "empty document", method="rememr1", model="m", source="f.json")
    assert list(failed) == list(ran)  # no diagnostics: no bridge entities to track
    assert ran["pred"] == "x" and ran["judge_sub_em"] == 1.0 and ran["length"] == "4k"
    assert ran["steps"] == ran["n_chunks"] + 1 == 5
    assert failed["pred"] is None and failed["judge_sub_em"] == 0.0 and failed["error"] == "empty document"
    assert failed["steps"] == failed["prompt_tokens"] == failed["seconds"] == 0


def test_step_line_detail_and_older_trace_lines(scripted):
    """`detail=True` (what `ask --trace` writes) is the eval step line plus the prompt,
    reply and cost; an older trace line (`StepRecord.to_json`) converts to the same line."""
    from rememr1.agent import Agent, AgentConfig
    from rememr1.eval import as_step_line, step_line

    replies = iter(["<update>Harn leads to Osk</update>", "<update>Osk</update><recall>Harn</recall>",
                    "<update>a</update><update>b</update>", "\\boxed{Osk}"])
    agent = Agent(scripted(lambda prompt, i: next(replies)), AgentConfig(chunk_size=20))
    result = agent.answer("word " * 12, "Where does Harn lead?")
    assert any(r.recall_hits for r in result.steps) and any(r.recalled_in for r in result.steps)
    for rec in result.steps:
        short, full = step_line(rec), step_line(rec, detail=True)
        assert {k: full[k] for k in short} == short
        assert set(full) - set(short) == {"prompt", "reply", "thinking", "chunk", "memory_before",
                                          "prompt_tokens", "seconds"}
        old = json.loads(json.dumps(rec.to_json()))
        assert as_step_line(old) == json.loads(json.dumps(full))
        assert as_step_line(full) is full  # a step line is read as it is
    assert [step_line(r)["well_formed"] for r in result.steps] == [True, True, False, True]


def test_read_jsonl_skips_cut_and_non_object_lines(tmp_path):
    from rememr1.eval import read_jsonl

    p = tmp_path / "x.jsonl"
    assert read_jsonl(p) == []
    p.write_text('{"id": 1}\n\n[1, 2]\n{"id": 2}\n{"id": 3, "pr')
    assert read_jsonl(p) == [{"id": 1}, {"id": 2}]
