"""Writing files: identical bytes for any worker count, schema D and A outputs, option
errors."""

from __future__ import annotations

import pytest

from rememr1.data import generate_revhop, load_samples
from rememr1.errors import InputError


def test_deterministic_across_runs_and_workers(tmp_path):
    kw = dict(lengths=["4k", "6k"], hops=[2, 3], orders=["reverse", "random"], n=3, seed=5)
    a = generate_revhop(out_dir=tmp_path / "a", **kw)
    b = generate_revhop(out_dir=tmp_path / "b", **kw)
    c = generate_revhop(out_dir=tmp_path / "c", workers=2, **kw)
    assert len(a) == 16  # 8 groups x (json + parquet)
    for pa_, pb, pc in zip(a, b, c):
        assert pa_.name == pb.name == pc.name
        assert pa_.read_bytes() == pb.read_bytes() == pc.read_bytes()
    d = generate_revhop(out_dir=tmp_path / "d", **{**kw, "seed": 6, "lengths": ["4k"]})
    assert d[1].read_bytes() != a[1].read_bytes()


def test_schema_d_and_schema_a_outputs(tmp_path):
    paths = generate_revhop(out_dir=tmp_path, lengths=["4k"], hops=[2], orders=["reverse"], n=3)
    names = sorted(p.name for p in paths)
    assert names == ["eval_revhop_h2_reverse_4k.json", "train_revhop_h2_reverse_4k.parquet"]
    d = load_samples(tmp_path / names[0])
    a = load_samples(tmp_path / names[1])
    assert [s.metadata["schema"] for s in d + a] == ["D"] * 3 + ["A"] * 3
    for sd, sa in zip(d, a):
        assert sd.question == sa.question and sd.answers == sa.answers
        assert sd.context == sa.context
        assert sa.metadata["data_source"] == "revhop"
        assert sa.metadata["num_docs"] == sd.metadata["num_docs"]
        assert sa.metadata["reward_style"] == "rule"
        m = sd.metadata
        for key in ("evidence_idx", "is_ordered", "is_reverse_ordered", "min_distance", "level",
                    "type", "hops", "order", "seed", "evidence_token_offsets", "num_docs"):
            assert key in m
        assert (m["hops"], m["order"], m["seed"]) == (2, "reverse", 0)
    assert len({s.id for s in d}) == 3


def test_bad_options(tmp_path):
    base = dict(out_dir=tmp_path, lengths=["4k"], hops=[2], orders=["reverse"], n=1)
    with pytest.raises(InputError, match="order"):
        generate_revhop(**{**base, "orders": ["sideways"]})
    with pytest.raises(InputError, match="format"):
        generate_revhop(**{**base, "formats": ["csv"]})
    with pytest.raises(InputError, match="hops"):
        generate_revhop(**{**base, "hops": [0]})
    with pytest.raises(InputError, match="tokenizer"):
        generate_revhop(**{**base, "tokenizer": str(tmp_path / "no-such-tokenizer")})
