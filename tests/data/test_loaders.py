"""Loaders: schemas A-D from JSON arrays, JSON Lines and parquet; index-only rebuild;
clear errors."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rememr1.data import detect_schema, iter_samples, load_samples
from rememr1.data.records import LazyContext
from rememr1.errors import InputError

from conftest import hotpot_records


def write_json(path, records):
    path.write_text(json.dumps(records))
    return path


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def write_parquet(path, records):
    pq.write_table(pa.Table.from_pylist(records), path)
    return path


WRITERS = {"json": write_json, "jsonl": write_jsonl, "parquet": write_parquet}


def schema_a(i):
    return {
        "data_source": "hotpotqa",
        "prompt": [{"role": "user", "content": f"Question {i}?"}],
        "context": f"Document 1:\nT{i}\nBody {i}.",
        "reward_model": {"ground_truth": [f"ans{i}", f"alias{i}"], "style": "rule"},
        "extra_info": {"index": i, "question": f"Question {i}?", "num_docs": 1},
        "ability": "memory",  # an unknown column
    }


def schema_b(i):
    return {"context": f"ctx {i}", "input": f"Q{i}?", "answers": [f"a{i}"], "num_docs": 50, "index": i}


def schema_c(i):
    return {"index": i, "input": f"Q{i}?", "context": f"ctx {i}", "outputs": [f"o{i}"],
            "answer_prefix": "Answer:", "length": 4096}


def schema_d(i):
    return {**schema_b(i), "is_ordered": False, "is_reverse_ordered": True, "min_distance": 7,
            "evidence_idx": [9, 2], "level": "hard", "type": "bridge", "id": f"id{i}"}


@pytest.mark.parametrize("fmt", ["json", "jsonl", "parquet"])
def test_schema_a(tmp_path, fmt):
    p = WRITERS[fmt](tmp_path / f"a.{fmt}", [schema_a(i) for i in range(3)])
    samples = load_samples(p)
    assert [s.question for s in samples] == ["Question 0?", "Question 1?", "Question 2?"]
    s = samples[1]
    assert s.answers == ["ans1", "alias1"]
    assert s.context == "Document 1:\nT1\nBody 1."
    assert s.id == "1"
    m = s.metadata
    assert (m["schema"], m["data_source"], m["index"], m["num_docs"]) == ("A", "hotpotqa", 1, 1)
    assert m["reward_style"] == "rule"


@pytest.mark.parametrize("fmt", ["json", "jsonl", "parquet"])
@pytest.mark.parametrize("schema,make", [("B", schema_b), ("C", schema_c), ("D", schema_d)])
def test_schemas_b_c_d(tmp_path, fmt, schema, make):
    p = WRITERS[fmt](tmp_path / f"x.{fmt}", [make(i) for i in range(4)])
    samples = load_samples(p)
    assert len(samples) == 4
    s = samples[2]
    assert s.metadata["schema"] == schema
    assert s.question == "Q2?"
    assert s.context == "ctx 2"
    if schema == "C":
        assert s.answers == ["o2"]
        assert s.metadata["answer_prefix"] == "Answer:" and s.metadata["length"] == 4096
    else:
        assert s.answers == ["a2"]
        assert s.metadata["num_docs"] == 50
    if schema == "D":
        m = s.metadata
        assert (m["evidence_idx"], m["min_distance"], m["is_reverse_ordered"]) == ([9, 2], 7, True)
        assert s.id == "id2"
    else:
        assert s.id == "2"


def test_schema_detection_by_fields():
    assert detect_schema(schema_a(0)) == "A"
    assert detect_schema(schema_b(0)) == "B"
    assert detect_schema(schema_c(0)) == "C"
    assert detect_schema(schema_d(0)) == "D"
    assert detect_schema({"question": "q", "answer": "a"}) is None


def test_string_answer_and_duplicate_ids(tmp_path):
    recs = [{**schema_b(0), "answers": "single"}, schema_b(0)]
    samples = load_samples(write_json(tmp_path / "b.json", recs))
    assert samples[0].answers == ["single"]
    assert [s.id for s in samples] == ["0", "0#1"]


def test_unknown_schema_names_fields(tmp_path):
    p = write_jsonl(tmp_path / "u.jsonl", [{"question": "q", "gold": "a", "passage": "p"}])
    with pytest.raises(InputError) as e:
        load_samples(p)
    msg = str(e.value)
    assert "unknown data schema" in msg and "gold, passage, question" in msg


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_samples(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('[{"input": "q", "context": "c", "answers": ["a"]},\n {"input": ')
    with pytest.raises(InputError, match="malformed JSON at line 2"):
        load_samples(bad)
    badl = tmp_path / "bad.jsonl"
    badl.write_text(json.dumps(schema_b(0)) + "\n{oops\n")
    with pytest.raises(InputError, match="line 2"):
        load_samples(badl)
    notpq = tmp_path / "x.parquet"
    notpq.write_bytes(b"definitely not parquet")
    with pytest.raises(InputError, match="parquet"):
        load_samples(notpq)
    with pytest.raises(InputError, match="directory"):
        load_samples(tmp_path)
    empty = write_json(tmp_path / "empty.json", [])
    with pytest.raises(InputError, match="no records"):
        load_samples(empty)


def test_record_without_answer_or_mixed_schema(tmp_path):
    with pytest.raises(InputError, match="record 1: no gold answer"):
        load_samples(write_json(tmp_path / "n.json", [schema_b(0), {**schema_b(1), "answers": []}]))
    with pytest.raises(InputError, match="record 1"):
        load_samples(write_json(tmp_path / "m.json", [schema_b(0), schema_a(1)]))


def test_iter_samples_is_lazy(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_text(json.dumps(schema_b(0)) + "\nnot json\n")
    it = iter_samples(p)
    assert next(it).question == "Q0?"  # the first record loads before the bad line is read
    with pytest.raises(InputError):
        next(it)


# ------------------------------------------------------------------ index-only contexts


def _expected_pool(records):
    return sorted({f"{t}\n{''.join(s)}" for r in records for t, s in r["context"]})


def test_index_only_rebuild_and_refusal(tmp_path, hotpot_file):
    pool = _expected_pool(hotpot_records())
    idx = [5, 0, len(pool) - 1]
    p = write_json(tmp_path / "eval_25600.json", [
        {"context": idx, "input": "Q?", "answers": ["a"], "num_docs": 3, "index": 0,
         "is_ordered": True, "is_reverse_ordered": False, "evidence_idx": [0, 1]},
    ])
    with pytest.raises(InputError) as e:
        load_samples(p)
    assert "--hotpot-dev" in str(e.value) and "hotpot_dev_distractor_v1.json" in str(e.value)

    (s,) = load_samples(p, hotpot_dev=str(hotpot_file))
    assert isinstance(s.context, LazyContext)
    expected = "\n\n".join(f"Document {i + 1}:\n{pool[j]}" for i, j in enumerate(idx))
    assert str(s.context) == expected
    assert s.metadata["num_docs"] == 3
    # A hand-checked document: the pool is sorted, so "Gold 0 A" comes first.
    assert str(s.context).split("\n\n")[1] == "Document 2:\nGold 0 A\nGold 0 A first. Gold 0 A second."

    out_of_range = write_json(tmp_path / "eval_bad.json", [
        {"context": [len(pool)], "input": "Q?", "answers": ["a"], "num_docs": 1, "index": 0},
    ])
    with pytest.raises(InputError, match="out of range"):
        load_samples(out_of_range, hotpot_dev=str(hotpot_file))
    with pytest.raises(InputError, match="not found"):
        load_samples(p, hotpot_dev=str(tmp_path / "missing.json"))


def test_index_only_pieces_end_on_document_boundaries(tmp_path, hotpot_file):
    from rememr1.data.hotpot import IndexedContext, load_pool

    pool = load_pool(hotpot_file)
    ctx = IndexedContext(pool, list(range(len(pool))), piece_chars=500)
    pieces = list(ctx.iter_text())
    assert len(pieces) > 3
    assert all(p.startswith("\n\nDocument ") for p in pieces[1:])
    assert "".join(pieces) == str(ctx)


def test_pretty_printed_single_object_and_bom(tmp_path):
    p = tmp_path / "one.json"
    p.write_text(json.dumps(schema_d(3), indent=2))
    (s,) = load_samples(p)
    assert s.id == "id3" and s.metadata["schema"] == "D"
    q = tmp_path / "bom.json"
    q.write_bytes(b"\xef\xbb\xbf" + json.dumps([schema_b(1)]).encode())
    assert load_samples(q)[0].question == "Q1?"  # a UTF-8 byte-order mark is accepted
