"""Long-context builder: gold paragraphs present, exact document counts, evidence fields,
permutation modes, subsets, determinism across worker counts, source layouts."""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rememr1.data import build_longctx, load_samples
from rememr1.errors import InputError

from conftest import flashrag_records, hotpot_records

DOC_RE = re.compile(r"(?:^|\n\n)Document (\d+):\n")


def split_docs(text: str) -> list[str]:
    """Document bodies in order, checking the headers count 1, 2, 3, ..."""
    heads = list(DOC_RE.finditer(text))
    assert [int(m.group(1)) for m in heads] == list(range(1, len(heads) + 1))
    bodies = []
    for k, m in enumerate(heads):
        end = heads[k + 1].start() if k + 1 < len(heads) else len(text)
        bodies.append(text[m.end():end])
    return bodies


def own_paragraphs(rec):
    return [f"{t}\n{''.join(s)}" for t, s in rec["context"]]


def load(path):
    return json.loads(path.read_text())


@pytest.fixture
def by_id():
    return {r["_id"]: r for r in hotpot_records()}


def test_documents_gold_and_evidence_fields(tmp_path, hotpot_file, by_id):
    paths = build_longctx(hotpot_file, docs=[50, 80], out_dir=tmp_path / "out", seed=1)
    main = [p for p in paths if "min_distance" not in p.name]
    assert [p.name for p in main] == ["eval_hotpotqa_50.json", "eval_hotpotqa_80.json"]
    for p, n_docs in zip(main, (50, 80)):
        items = load(p)
        assert len(items) == 30  # every question (n not given)
        for it in items:
            src = by_id[it["id"]]
            docs = split_docs(it["context"])
            assert len(docs) == n_docs == it["num_docs"]
            assert len(set(docs)) == n_docs  # no paragraph twice
            # every own paragraph (gold and distractors) is in the context
            assert set(own_paragraphs(src)) <= set(docs)
            # evidence_idx points at the supporting paragraphs, in supporting-fact order
            gold_titles = ["Gold {} A", "Gold {} B"]
            q = int(it["id"][1:])
            found = [next(i for i, d in enumerate(docs) if d.startswith(t.format(q) + "\n"))
                     for t in gold_titles]
            assert it["evidence_idx"] == found
            assert it["is_ordered"] == (found[0] < found[1])
            assert it["is_reverse_ordered"] == (found[0] > found[1])
            assert it["min_distance"] == abs(found[0] - found[1])
            assert it["input"].endswith("?") and it["answers"] == [src["answer"]]
            assert (it["type"], it["level"]) == (src["type"], "hard")


def own_slots(item, src):
    docs = split_docs(item["context"])
    own = set(own_paragraphs(src))
    return sorted(i for i, d in enumerate(docs) if d in own)


def test_compat_slots_fixed_default_per_item(tmp_path, hotpot_file, by_id):
    compat = load(build_longctx(hotpot_file, docs=[60], out_dir=tmp_path / "c", compat=True)[0])
    slots = {tuple(own_slots(it, by_id[it["id"]])) for it in compat}
    assert len(slots) == 1  # same ten slots for every question
    assert all(it["permutation"] == "fixed-seed4" for it in compat)
    default = load(build_longctx(hotpot_file, docs=[60], out_dir=tmp_path / "d")[0])
    slots = {tuple(own_slots(it, by_id[it["id"]])) for it in default}
    assert len(slots) > 20  # per-item permutations scatter them


def test_deterministic_and_independent_of_workers(tmp_path, hotpot_file):
    a = build_longctx(hotpot_file, docs=[50, 70], out_dir=tmp_path / "a", seed=3, n=4,
                      min_distances=[1, 10])
    b = build_longctx(hotpot_file, docs=[50, 70], out_dir=tmp_path / "b", seed=3, n=4,
                      min_distances=[1, 10], workers=2)
    assert [p.name for p in a] == [p.name for p in b]
    for pa_, pb in zip(a, b):
        assert pa_.read_bytes() == pb.read_bytes()
    c = build_longctx(hotpot_file, docs=[50], out_dir=tmp_path / "c", seed=4, n=4)
    assert c[0].read_bytes() != a[0].read_bytes()


def test_selection_and_min_distance_subsets(tmp_path, hotpot_file):
    paths = build_longctx(hotpot_file, docs=[90], out_dir=tmp_path, seed=0, n=5,
                          min_distances=[1, 30, 89])
    names = {p.name: p for p in paths}
    main = load(names["eval_hotpotqa_90.json"])
    assert len(main) == 5 and len({it["id"] for it in main}) == 5
    sub1 = load(names["eval_hotpotqa_90_min_distance_1.json"])
    assert len(sub1) == 5  # 25 candidates: at least 5 have reverse-ordered evidence
    for d in (1, 30, 89):
        key = f"eval_hotpotqa_90_min_distance_{d}.json"
        if key in names:  # written only when some candidate qualifies
            sub = load(names[key])
            assert 1 <= len(sub) <= 5
            assert all(it["is_reverse_ordered"] and it["min_distance"] >= d for it in sub)
    # Candidates fill every file in the same order: the main file's reverse-ordered items
    # are the first ones of the d=1 subset.
    rev_main = [it["id"] for it in main if it["is_reverse_ordered"]]
    assert [it["id"] for it in sub1][: len(rev_main)] == rev_main
    # the same question has the same text in both files
    by_id = {it["id"]: it for it in main}
    for it in sub1:
        if it["id"] in by_id:
            assert it == by_id[it["id"]]


def test_flashrag_jsonl_and_parquet_match_hotpot(tmp_path, hotpot_file, flashrag_jsonl):
    ref = build_longctx(hotpot_file, docs=[40], out_dir=tmp_path / "h", name="x", n=6)[0]
    js = build_longctx(flashrag_jsonl, docs=[40], out_dir=tmp_path / "j", name="x", n=6)[0]
    pqf = tmp_path / "flash.parquet"
    pq.write_table(pa.Table.from_pylist(flashrag_records(hotpot_records())), pqf)
    pqo = build_longctx(pqf, docs=[40], out_dir=tmp_path / "p", name="x", n=6)[0]
    assert ref.read_bytes() == js.read_bytes() == pqo.read_bytes()


def test_index_only_above_threshold_rebuilds_same_text(tmp_path, hotpot_file):
    text = build_longctx(hotpot_file, docs=[70], out_dir=tmp_path / "t", n=3, seed=2)[0]
    idx = build_longctx(hotpot_file, docs=[70], out_dir=tmp_path / "i", n=3, seed=2,
                        index_only_above=60)[0]
    raw = load(idx)
    assert all(isinstance(it["context"], list) and len(it["context"]) == 70 for it in raw)
    with pytest.raises(InputError, match="--hotpot-dev"):
        load_samples(idx)
    rebuilt = load_samples(idx, hotpot_dev=str(hotpot_file))
    plain = load_samples(text)
    assert [str(s.context) for s in rebuilt] == [s.context for s in plain]


def test_more_docs_than_pool_and_fewer_than_own(tmp_path, hotpot_file):
    (p,) = build_longctx(hotpot_file, docs=[1000], out_dir=tmp_path, n=2, min_distances=[999])
    for it in load(p):
        assert it["num_docs"] == 100 == len(split_docs(it["context"]))  # the whole pool
    (p,) = build_longctx(hotpot_file, docs=[4], out_dir=tmp_path, n=2, min_distances=[999])
    for it in load(p):
        docs = split_docs(it["context"])
        assert len(docs) == 4
        assert sorted(docs[i].split("\n")[0] for i in it["evidence_idx"]) == sorted(
            [f"Gold {int(it['id'][1:])} A", f"Gold {int(it['id'][1:])} B"])
    with pytest.raises(InputError, match="evidence"):
        build_longctx(hotpot_file, docs=[1], out_dir=tmp_path, n=1)


def test_bad_sources(tmp_path):
    with pytest.raises(InputError, match="not found"):
        build_longctx(tmp_path / "none.json", docs=[50], out_dir=tmp_path)
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps([{"input": "q", "context": "c", "answers": ["a"]}]))
    with pytest.raises(InputError, match="fields seen: answers, context, input"):
        build_longctx(odd, docs=[50], out_dir=tmp_path)
    with pytest.raises(InputError, match="positive"):
        build_longctx(odd, docs=[0], out_dir=tmp_path)
