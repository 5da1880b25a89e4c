"""Peak memory and seconds per RL step as episodes get longer and groups larger.

    python bench/train_memory.py                        # the 3 x 3 grid, built-in model, CPU
    python bench/train_memory.py --baseline f2d0558     # also the trainer of that commit, same work
    python bench/train_memory.py --issue-command        # + the 4.5K-token command of issue 11
    python bench/train_memory.py --steps "" --growth 10 # RSS over 10 steps: oneDNN caches bounded or not, fp32
    python bench/train_memory.py --report               # reprint the saved table

Each cell is one training step (B = 1 question, G rollouts, a document of (S - 1) chunks of
`--chunk-size` tokens, so S agent steps per episode = S training sequences per rollout) run
in a fresh process; its peak resident memory comes from `getrusage` of that process (the
model, rollouts, reference scoring and the update all included). With `--baseline REF`
the same cells also run the trainer of git commit REF (checked out into a temporary
worktree), watched by this script and killed above `--cap-gb`, so it cannot take the
machine down. A third table compares bfloat16 autocast with float32 on one micro-batch:
seconds for forward + backward, and how far loss and gradient move. `--growth N` runs N
steps in one process per variant and reads the peak RSS the trainer logs after each
step: bfloat16 autocast with oneDNN's shape-keyed caches bounded (what `rememr1` sets,
backends.hf.bound_onednn_caches), with torch's default caches (1024 entries each), and
float32; a trainer whose memory creeps up step by step shows it here.

Writes bench/results/train_memory.json. Target (issue 11): peak at 32 steps x G = 8 within
1.5x of 2 steps x G = 2; the issue-11 command completes 2 steps under 6 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "train_memory.json"
FILLER = ("The harbour office logged every ship that entered the bay, its cargo, its captain "
          "and the weather on the day it arrived. ")


def make_parquet(path: Path, doc_tokens: int, n: int = 2) -> Path:
    """Schema-A training file whose documents have `doc_tokens` tokens of the built-in
    model's tokenizer (filler with one fact in the middle)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rememr1.backends.builtin import builtin_gguf_path
    from rememr1.backends.llamacpp import load_vocab
    from rememr1.backends.tokenization import LlamaTokenizer

    tok = LlamaTokenizer(load_vocab(builtin_gguf_path()))
    unit = len(tok.encode(FILLER))
    rows = []
    for i in range(n):
        half = FILLER * max(1, doc_tokens // (2 * unit))
        fact = f"The lens for lighthouse {i} was built by Orrin Yard. "
        ids = tok.encode(half + fact + half)[:doc_tokens]
        rows.append({
            "prompt": [{"role": "user", "content": f"Who built the lens for lighthouse {i}?"}],
            "context": tok.decode(ids),
            "reward_model": {"ground_truth": ["Orrin Yard"], "style": "rule"},
            "data_source": "bench",
            "extra_info": {"index": i, "question": f"Who built the lens for lighthouse {i}?", "num_docs": 1},
        })
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def run_cell(src: Path, data: Path, out: Path, *, steps_per_episode: int, group: int, args,
             train_steps: int = 1, chunk: int | None = None, new_tokens: int | None = None,
             env: dict[str, str | None] | None = None, extra: tuple[str, ...] = ()) -> dict:
    """One `rememr1 train` process (code from `src`); peak RSS polled and capped. `env`:
    variables to set (None: unset) for it; `extra`: more `rememr1 train` arguments."""
    import psutil

    cmd = [sys.executable, "-m", "rememr1", "train", "--data", str(data), "--out", str(out),
           "--steps", str(train_steps), "--group-size", str(group), "--batch-size", "1",
           "--chunk-size", str(chunk or args.chunk_size),
           "--max-new-tokens", str(new_tokens or args.max_new_tokens), "--save-every", "0",
           "--set", "rollout.sampling.temperature=0.7", "--set", "agent.fallback=reply",
           "--set", "model.device=cpu", "--quiet", *extra]
    env = {k: v for k, v in {**os.environ, "PYTHONPATH": str(src), **(env or {})}.items() if v is not None}
    t0 = time.perf_counter()
    proc = psutil.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak, killed = 0, False
    while proc.poll() is None:
        try:
            rss = proc.memory_info().rss
        except psutil.Error:
            break
        peak = max(peak, rss)
        if rss > args.cap_gb * 2**30:
            proc.kill()
            killed = True
            break
        time.sleep(0.2)
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.wait()
    seconds = time.perf_counter() - t0
    row = {"steps_per_episode": steps_per_episode, "group_size": group, "peak_gb": peak / 2**30,
           "killed": killed, "returncode": proc.returncode, "wall_s": seconds}
    metrics = out / "metrics.jsonl"
    lines = [json.loads(x) for x in metrics.read_text().splitlines()] if metrics.exists() else []
    lines = [x for x in lines if x.get("type") == "train"]
    if lines:
        row["seconds_step"] = sum(x["seconds_step"] for x in lines) / len(lines)
        row["sequences"] = lines[-1]["sequences"]
        row["tokens"] = lines[-1]["tokens"]
        row["peak_rss_gb_reported"] = lines[-1].get("peak_rss_gb")
        row["micro_batches"] = lines[-1].get("micro_batches")
        row["budget"] = lines[-1].get("max_tokens_per_micro_batch")
        row["rss_per_step"] = [x.get("peak_rss_gb") for x in lines]
        row["seconds_per_step"] = [x["seconds_step"] for x in lines]
    if proc.returncode not in (0, None) and not killed:
        row["error"] = (stderr.strip().splitlines() or ["?"])[-1][:200]
    return row


def precision_check(args) -> dict:
    """bf16 autocast vs float32 on one micro-batch of the built-in model: time of forward +
    backward, and the change in loss and gradient."""
    import torch

    from rememr1.backends.hf import load_pretrained
    from rememr1.rl.sequences import TrainSequence, completion_logprobs

    model, _, _ = load_pretrained(None, torch.float32)
    model.eval()
    g = torch.Generator().manual_seed(0)
    seqs = [TrainSequence(prompt_ids=tuple(torch.randint(0, 49000, (args.chunk_size + 300,), generator=g).tolist()),
                          completion_ids=tuple(torch.randint(0, 49000, (args.max_new_tokens,), generator=g).tolist()),
                          advantage=1.0, question=0) for _ in range(8)]
    out = {}
    grads = {}
    for name, autocast in (("float32", False), ("bfloat16", True)):
        times = []
        for _ in range(2):
            model.zero_grad()
            t0 = time.perf_counter()
            logp, mask, _ = completion_logprobs(model, seqs, pad_id=2, autocast=autocast)
            loss = -(logp * mask).sum() / mask.sum()
            loss.backward()
            times.append(time.perf_counter() - t0)
        grads[name] = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        out[name] = {"seconds": min(times), "loss": float(loss.detach())}
    a, b = grads["float32"], grads["bfloat16"]
    out["grad_cosine"] = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
    out["grad_rel_diff"] = float((a - b).norm() / a.norm())
    out["tokens"] = sum(s.length for s in seqs)
    return out


def growth_variants() -> dict[str, tuple[dict[str, str | None], tuple[str, ...]]]:
    """name: (environment, extra `rememr1 train` arguments) of each --growth run."""
    from rememr1.backends.hf import ONEDNN_CACHE_VARS

    return {
        "bf16, caches capped (default)": (dict.fromkeys(ONEDNN_CACHE_VARS), ()),
        "bf16, caches 1024 (torch's)": (dict.fromkeys(ONEDNN_CACHE_VARS, "1024"), ()),
        "float32": ({}, ("--no-bf16",)),
    }


def growth(args, tmp: Path) -> dict:
    """`args.growth` trainer steps per variant, one process each; RSS after every step."""
    s, g = args.growth_cell
    data = make_parquet(tmp / "growth.parquet", (s - 1) * args.chunk_size, n=4)
    out = {}
    for name, (env, extra) in growth_variants().items():
        row = run_cell(ROOT / "src", data, tmp / f"growth-{len(out)}", steps_per_episode=s, group=g,
                       args=args, train_steps=args.growth, env=env, extra=extra)
        out[name] = row
        print(json.dumps({"growth": name, **row}), flush=True)
    return out


def worktree(ref: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix="rememr1-baseline-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), ref],
                   check=True, capture_output=True)
    return path


def show(results: dict) -> None:
    console = Console()
    for label, rows in results.get("grid", {}).items():
        table = Table(title=f"one RL step, built-in model, CPU: {label}")
        for col in ("steps/episode", "G", "sequences", "tokens", "peak RSS GB", "s/step", "micro-batches",
                    "token budget"):
            table.add_column(col, justify="right")
        for r in rows:
            peak = f"> {r['peak_gb']:.1f} (killed)" if r.get("killed") else f"{r['peak_gb']:.2f}"
            if r.get("error"):
                peak += f" ({r['error'][:40]})"
            table.add_row(str(r["steps_per_episode"]), str(r["group_size"]), str(r.get("sequences", "")),
                          str(r.get("tokens", "")), peak,
                          f"{r['seconds_step']:.0f}" if "seconds_step" in r else "-",
                          str(r.get("micro_batches", "")), str(r.get("budget", "")))
        console.print(table)
        done = {(r["steps_per_episode"], r["group_size"]): r for r in rows}
        lo, hi = done.get((2, 2)), done.get((32, 8))
        if lo and hi and not hi.get("killed"):
            console.print(f"{label}: peak at 32 steps x G=8 / 2 steps x G=2 = "
                          f"{hi['peak_gb'] / lo['peak_gb']:.2f} (target <= 1.5)")
    if "issue_command" in results:
        r = results["issue_command"]
        console.print(f"issue-11 command (4.5K-token document, chunk 256, 48 new tokens, G=2, 2 steps): "
                      f"peak {r['peak_gb']:.2f} GB, {r.get('seconds_step', float('nan')):.0f} s/step, "
                      f"return code {r['returncode']} (target: completes under 6 GB)")
    if "growth" in results:
        table = Table(title="resident memory over RL steps, one process, built-in model, CPU")
        for col in ("variant", "steps", "RSS step 1", "RSS step 2", "RSS last", "GB/step after 2", "s/step"):
            table.add_column(col, justify="right")
        for name, r in results["growth"].items():
            rss = r.get("rss_per_step") or []
            secs = r.get("seconds_per_step") or []
            # step 1 is warm-up (the first update's buffers); the creep is what follows
            slope = (rss[-1] - rss[1]) / (len(rss) - 2) if len(rss) > 2 else float("nan")
            cell = lambda i: f"{rss[i]:.2f}" if len(rss) > abs(i) else "-"  # noqa: E731
            table.add_row(name, str(len(rss)), cell(0), cell(1), cell(-1), f"{slope:+.3f}",
                          f"{sum(secs) / len(secs):.0f}" if secs else "-")
        console.print(table)
    if "precision" in results:
        p = results["precision"]
        console.print(
            f"fwd+bwd on {p['tokens']} tokens: float32 {p['float32']['seconds']:.2f} s, bfloat16 autocast "
            f"{p['bfloat16']['seconds']:.2f} s ({p['float32']['seconds'] / p['bfloat16']['seconds']:.2f}x); "
            f"loss {p['float32']['loss']:.4f} vs {p['bfloat16']['loss']:.4f}; gradient cosine "
            f"{p['grad_cosine']:.4f}, relative difference {p['grad_rel_diff']:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", default="2,8,32", help="agent steps per episode (empty: no grid)")
    ap.add_argument("--groups", default="2,4,8", help="rollouts per question")
    ap.add_argument("--cells", default=None, help="only these cells, e.g. 2x2,32x8 (steps x G)")
    ap.add_argument("--label", default="this trainer", help="the grid's name in the results")
    ap.add_argument("--chunk-size", type=int, default=128)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--baseline", default=None, help="git ref of a trainer to compare with")
    ap.add_argument("--cap-gb", type=float, default=18.0, help="kill a run above this RSS")
    ap.add_argument("--issue-command", action="store_true")
    ap.add_argument("--growth", type=int, default=0, help="RSS over this many steps per variant (0: skip)")
    ap.add_argument("--growth-cell", default="8x4", help="steps/episode x G for --growth")
    ap.add_argument("--merge", action="store_true",
                    help="keep the saved results and replace only what this run measures")
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args()
    args.growth_cell = tuple(int(v) for v in args.growth_cell.split("x"))
    if args.report:
        show(json.loads(RESULTS.read_text()))
        return
    results: dict = {"args": vars(args), "grid": {}}
    if args.merge and RESULTS.exists():
        results = {**json.loads(RESULTS.read_text()), "args": vars(args)}
    sources = {args.label: ROOT / "src"}
    tree = None
    if args.baseline:
        tree = worktree(args.baseline)
        sources[f"trainer of {args.baseline}"] = tree / "src"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for label, src in sources.items():
            if not args.steps:
                break
            rows = []
            cells = ([tuple(int(v) for v in c.split("x")) for c in args.cells.split(",")] if args.cells else
                     [(s, g) for s in map(int, args.steps.split(",")) for g in map(int, args.groups.split(","))])
            for s in sorted({s for s, _ in cells}):
                data = make_parquet(tmp / f"doc{s}.parquet", (s - 1) * args.chunk_size)
                for g in [g for s2, g in cells if s2 == s]:
                    out = tmp / f"{label.replace(' ', '_')}-{s}-{g}"
                    row = run_cell(src, data, out, steps_per_episode=s, group=g, args=args)
                    rows.append(row)
                    print(json.dumps({"trainer": label, **row}), flush=True)
            results["grid"][label] = rows
        if args.issue_command:
            data = make_parquet(tmp / "issue.parquet", 4500)
            results["issue_command"] = run_cell(ROOT / "src", data, tmp / "issue", steps_per_episode=19,
                                                group=2, args=args, train_steps=2, chunk=256, new_tokens=48)
            print(json.dumps(results["issue_command"]), flush=True)
        if args.growth:
            results["growth"] = growth(args, tmp)
    if not (args.merge and "precision" in results):
        results["precision"] = precision_check(args)
    if tree is not None:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    show(results)


if __name__ == "__main__":
    main()
