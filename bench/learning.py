"""Does the built-in agent learn? Base vs warm-started (SFT) vs SFT+RL on a RevHop dev set
made with another seed than the training data, and RL reward curves from the SFT start.

    python bench/learning.py data                                   # dev set seed 1, RL set seed 0 (seconds)
    python bench/learning.py eval --name base --no-adapter          # the plain built-in model
    python bench/learning.py eval --name sft --adapter runs/sft/checkpoint-60 --lengths "" --extra ""  # key cell only
    python bench/learning.py rl --start runs/sft/checkpoint-60 --lora --lr 2e-4 --steps 16 -B 2 --alphas 0.8
    python bench/learning.py rl --start runs/sft/checkpoint-60 --lora --lr 2e-4 --steps 40 -B 2 --alphas 0.8 --engine llamacpp --tag=-gguf
    python bench/learning.py rl --start runs/partial/sft/checkpoint-20 --lora --lr 1e-4 -B 2 --alphas 0.8 --engine llamacpp --tag=-sft20-lr1e-4 --steps 60  # from an earlier SFT checkpoint
    python bench/learning.py eval --name sft+rl --adapter runs/learning/rl-0.8/checkpoint-16
    python bench/learning.py speed                                  # llama.cpp with vs without the adapter
    python bench/learning.py engines -G 8 -B 4 --max-new-tokens 192 --lr 1e-4   # one L1 RL step per rollout engine
    python bench/learning.py report --sft-run runs/sft --sft-steps 60  # table + PNG from saved runs
    python bench/learning.py ladder --work runs/ladder --results bench/results --rung l1 --lr 1e-4 --alpha 1.0 \
        --steps 30 --eval-every 15 -G 8 -B 4 --max-new-tokens 192 --concurrency 8   # the L1 rung (issue 22)

Eval grid: lengths x hops x orders (default 2k,4k x 2,3 x reverse,forward, plus 8k with 2
hops both orders: `--extra`), `--n` items per cell with `rememr1`, plus the key cell (4K
tokens, 2 hops, reverse order) with `--n-key` items for both `rememr1` and `memagent` on
the same checkpoint. Sections of 512 tokens, 320 new tokens per step
(`--max-new-tokens-eval`), the paper's evaluation sampling (temperature 0.7, top-p 0.95),
the same seeds for every checkpoint. Per run: format rate (memory steps with exactly one
closed <update>), boxed rate (final replies with a \\boxed{} answer), recall rate (memory
steps that wrote a <recall> query), sub-EM accuracy with a Wilson 95% interval. Runs go
through `rememr1.eval.run_eval` (resumable: rerun to continue) into `--work`.

RL: `rememr1 train` from the SFT checkpoint for alpha = 0.8 and 1.0, same data, seed and
start (`--alphas 0.8` and `--alphas 1.0` may run as two processes side by side), on
1K-token 2-hop items of the training world (two sections; `--rl-length`); `--lora` trains
the SFT adapter itself, so the result is an adapter `eval --adapter` takes; `--engine
llamacpp` samples the rollouts on llama.cpp (`rememr1.rl.gguf_rollouts`, about 2x faster
here); `--tag` names the run directory rl-ALPHA-TAG (`--tag=-x`: a leading dash needs the =). The slope of
each reward over steps with its 95% interval (least squares, t quantile); `report`
re-reads every `rl-*` run under `--work`, cut at `--rl-max-step` when runs stopped apart.
Results: bench/results/learning.json and learning.png; with another `--work` (a smoke run,
say), WORK/results/ unless `--results` says where, so a trial never overwrites the record.

Ladder (`ladder --rung l1|l2`): each rung has its own training questions and a fixed
held-out set from another seed, so another world (L1: 256 training and 128 held-out
512-token 1-hop items, seeds 11 and 5; L2: 1-2 hops over 1K-2K tokens, seeds 12 and 6).
It scores the start (the packaged adapter, or `--ladder-start`) on the held-out set, then
trains with `rememr1 train` (LoRA, llama.cpp rollouts at temperature 0.7, `--alpha`,
`--kl`, `--lr`, token-mean loss, no std scaling) in segments of `--eval-every` steps and
scores each checkpoint with `rememr1 eval --adapter CKPT --temperature 0` (greedy, so the
interval measures the model, not the sampling). Each gain is paired (the same items
before and after) with a percentile bootstrap 95% interval over items (10,000 resamples)
and the counts of items gained and lost. Everything resumes: rerun the same command.
Results under "ladder" in learning.json, the curve in learning-ladder.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"  # for the default --work; main() points it elsewhere for another
DEFAULT_WORK = Path("runs/learning")
KEY = ("4k", 2, "reverse")
REWARDS = ("outcome_reward", "state_reward", "memory_gain", "callback_bonus", "format_reward")


def _load() -> dict:
    p = RESULTS / "learning.json"
    return json.loads(p.read_text()) if p.exists() else {"eval": {}, "rl": {}}


def _save(payload: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "learning.json").write_text(json.dumps(payload, indent=2))


def cmd_data(args) -> None:
    from rememr1.data.revhop import generate_revhop

    dev = args.work / "dev"
    paths = generate_revhop(out_dir=dev, lengths=["2k", "4k", "8k"], hops=[2, 3],
                            orders=["reverse", "forward"], n=max(args.n, args.n_key), seed=1,
                            tokenizer="smollm2", formats=["json"])
    # RL data: the training world (seed 0), 2 hops, short documents (512-token sections:
    # at 1K two, so the evidence sits closer than the default gap allows: --rl-min-gap),
    # so a CPU step stays a few minutes.
    train = generate_revhop(out_dir=args.work / "train", lengths=[args.rl_length], hops=[2],
                            orders=["reverse", "forward"], n=64, seed=0, tokenizer="smollm2",
                            formats=["parquet"], min_gap=args.rl_min_gap)
    print("\n".join(map(str, paths + train)))


def _cells(args):
    for length in filter(None, args.lengths.split(",")):
        for hops in (2, 3):
            for order in ("reverse", "forward"):
                yield length, hops, order
    for cell in filter(None, args.extra.split(",")):
        length, hops, order = cell.split(":")
        yield length, int(hops), order


def cmd_eval(args) -> None:
    from rememr1.agent import Agent, AgentConfig
    from rememr1.backends import load_backend
    from rememr1.backends.base import SamplingParams
    from rememr1.eval import run_eval

    adapter = False if args.no_adapter else (args.adapter or True)
    backend = load_backend(args.backend, model=args.model, adapter=adapter,
                           **({"n_threads": args.threads} if args.threads else {}))
    sampling = SamplingParams(temperature=0.7, top_p=0.95, max_new_tokens=args.max_new_tokens_eval, seed=0)
    out = args.work / "eval" / args.name
    dev = args.work / "dev"
    config = {"name": args.name, "model": backend.model_name, "chunk_size": 512}

    def make_agent(method: str) -> Agent:
        return Agent(backend, config=AgentConfig(method=method, chunk_size=512), sampling=sampling)

    console = Console()
    t0 = time.perf_counter()
    with backend:
        jobs = [((length, hops, order), ["rememr1"], args.n) for length, hops, order in _cells(args)]
        jobs.insert(0, (KEY, ["rememr1", "memagent"], args.n_key))
        for (length, hops, order), methods, n in jobs:
            f = dev / f"eval_revhop_h{hops}_{order}_{length}.json"
            run_eval([f], make_agent=make_agent, methods=methods, out_dir=out, config=config,
                     limit=n, concurrency=args.concurrency)
            console.print(f"{args.name}: {f.name} x {','.join(methods)} done "
                          f"({(time.perf_counter() - t0) / 60:.1f} min)")
    payload = _load()
    payload["eval"][args.name] = summarize_eval(out, args)
    _save(payload)
    print_eval(payload)


def summarize_eval(out: Path, args) -> dict:
    from rememr1.eval import read_jsonl
    from rememr1.metrics import wilson_interval

    cells = {}
    for method_dir in sorted(p for p in out.iterdir() if p.is_dir()):
        for f in sorted(method_dir.glob("*.jsonl")):
            results = read_jsonl(f)
            if not results:
                continue
            steps = {s["id"]: s for s in read_jsonl(method_dir / "steps" / f.name)}
            mem = [st for r in results for st in steps.get(str(r["id"]), {}).get("steps", [])
                   if st["kind"] == "memory"]
            n = len(results)
            right = sum(1 for r in results if r["judge_sub_em"])
            cells[f"{method_dir.name}/{f.stem.removeprefix('eval_')}"] = {
                "items": n,
                "accuracy": right / n if n else None, "accuracy_ci95": list(wilson_interval(right, n)),
                "format_rate": sum(1 for s in mem if s.get("well_formed")) / len(mem) if mem else None,
                "recall_rate": sum(1 for s in mem if s.get("query")) / len(mem) if mem else None,
                "boxed_rate": sum(1 for r in results if r.get("pred") is not None) / n if n else None,
                "memory_steps": len(mem),
                "seconds_per_item": sum(r["seconds"] for r in results) / n if n else None,
            }
    return cells


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def print_eval(payload: dict) -> None:
    console = Console(width=170)
    names = list(payload["eval"])
    keys = sorted({k for v in payload["eval"].values() for k in v})
    table = Table(title="RevHop dev (seed 1): accuracy (sub-EM, Wilson 95%) / format / recall / boxed")
    table.add_column("method / cell")
    for name in names:
        table.add_column(name, justify="right")
    for key in keys:
        row = [key]
        for name in names:
            c = payload["eval"][name].get(key)
            row.append("" if c is None else
                       f"{_pct(c['accuracy'])} [{_pct(c['accuracy_ci95'][0])},{_pct(c['accuracy_ci95'][1])}] n={c['items']}"
                       f" | fmt {_pct(c['format_rate'])} rec {_pct(c['recall_rate'])} box {_pct(c['boxed_rate'])}")
        table.add_row(*row)
    totals = ["all rememr1 cells"]
    for name in names:
        cs = [c for k, c in payload["eval"][name].items() if k.startswith("rememr1/")]
        steps = sum(c["memory_steps"] for c in cs)
        fmt = sum((c["format_rate"] or 0) * c["memory_steps"] for c in cs) / steps if steps else None
        n = sum(c["items"] for c in cs)
        acc = sum((c["accuracy"] or 0) * c["items"] for c in cs) / n if n else None
        totals.append(f"acc {_pct(acc)} n={n} | format {_pct(fmt)} over {steps} steps")
    table.add_row(*totals)
    console.print(table)


def slope_ci(ys: list[float]) -> dict:
    """Least-squares slope of ys over steps 1..n with its 95% interval (t quantile)."""
    from scipy import stats

    xs = list(range(1, len(ys) + 1))
    if len(ys) < 3:
        return {"slope": None, "ci95": None}
    if max(ys) == min(ys):  # no variation at all (e.g. an outcome reward that stayed 0)
        return {"slope": 0.0, "ci95": [0.0, 0.0], "constant": True}
    fit = stats.linregress(xs, ys)
    t = stats.t.ppf(0.975, len(ys) - 2)
    return {"slope": fit.slope, "ci95": [fit.slope - t * fit.stderr, fit.slope + t * fit.stderr]}


def _rl_config(args, out: Path, *, alpha: float, engine: str, steps: int):
    from rememr1.rl.config import load_config

    data = sorted(str(p) for p in (args.work / "train").glob("train_*.parquet"))
    if not data:
        sys.exit("no training data: run `python bench/learning.py data` first")
    return load_config(None, {
        "out": str(out), "steps": steps, "save_every": 1, "keep_last": 1, "seed": 0,
        "model.path": str(args.start), "model.device": "cpu", "model.dtype": "float32",
        "data.train": data, "rollout.group_size": args.group_size, "rollout.batch_size": args.batch_size,
        "rollout.generation_batch_size": args.group_size * args.batch_size,
        "agent.chunk_size": 512, "rollout.sampling.max_new_tokens": args.max_new_tokens,
        "rollout.sampling.temperature": 0.7, "rollout.sampling.top_p": 1.0, "advantage.alpha": alpha,
        "optim.lr": args.lr, "optim.warmup_steps": 0, "model.lora": args.lora,
        "rollout.engine": engine,
    })


def cmd_rl(args) -> None:
    from rememr1.rl.trainer import Trainer

    for alpha in [float(a) for a in args.alphas.split(",")]:
        out = args.work / f"rl-{alpha}{args.tag}"
        Trainer(_rl_config(args, out, alpha=alpha, engine=args.engine, steps=args.steps), quiet=False).train()
        payload = _load()  # fresh: one process per alpha may run beside this one
        payload["rl"][f"alpha={alpha}{args.tag}"] = rl_entry(out)
        _save(payload)
    print_rl(payload)


L1_SEED = 11  # the overfit/probe questions: 512-token 1-hop reverse-order items


def _l1_train(args) -> list[str]:
    """The L1 training questions (`-B` of them), generated into WORK/l1-train once."""
    from rememr1.data.revhop import generate_revhop

    out = args.work / "l1-train"
    files = sorted(str(p) for p in out.glob("train_*.parquet"))
    if not files:
        files = [str(p) for p in generate_revhop(out_dir=out, lengths=["512"], hops=[1], orders=["reverse"],
                                                 n=args.batch_size, seed=L1_SEED, tokenizer="smollm2",
                                                 formats=["parquet"])]
    return files


def _raw_update_tokens_per_s(trainer, tokens: int, repeats: int = 3) -> float:
    """Forward + backward of the trainer's scorer on one micro-batch of `tokens` tokens
    (one row, the last 192 of them scored): the peak the update can reach per token."""
    from rememr1.rl.sequences import TrainSequence, completion_logprobs

    seq = TrainSequence(prompt_ids=tuple(range(1000, 1000 + tokens - 192)),
                        completion_ids=tuple(range(2000, 2192)), advantage=1.0, question=0)
    p = trainer.policy
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        logp, mask, _ = completion_logprobs(trainer.scorer, [seq], pad_id=p.pad_id, autocast=p.autocast)
        (logp * mask).sum().backward()
        times.append(time.perf_counter() - t0)
        trainer.optimizer.zero_grad(set_to_none=True)
    return tokens / (sum(times[1:]) / repeats)  # the first pass warms the kernels


def cmd_engines(args) -> None:
    """One RL step at L1 settings per rollout engine, from the same start, seed and
    questions, one after the other in this process: today's llama.cpp instance pool (one
    sequence per instance) against parallel decoding (all rollouts in one context, shared
    prompts evaluated once); `--with-hf` adds the torch sampler. Then the update's
    tokens/s beside the raw forward + backward rate on one micro-batch of the same budget.
    "before" is the trainer as it was: one sequence per llama.cpp instance, and every
    sequence scored with its whole prompt; "after" decodes all rollouts together,
    evaluates a prompt the rollouts share once (`optim.share_prompts`) and leaves out the
    sequences whose advantage is 0 (`optim.skip_zero_advantage`; no KL term here)."""
    import shutil

    from rememr1.rl.config import load_config
    from rememr1.rl.trainer import Trainer

    data = _l1_train(args)
    start = args.start or Path(__file__).resolve().parents[1] / "src/rememr1/adapters/smollm2-135m-revhop"
    variants = {"before: llamacpp pool": {"rollout.engine": "llamacpp", "rollout.engine_parallel": 1,
                                          "optim.share_prompts": False, "optim.skip_zero_advantage": False},
                "after: llamacpp parallel": {"rollout.engine": "llamacpp", "rollout.engine_parallel": 32,
                                             "optim.share_prompts": True}}
    if args.with_hf:
        variants["hf torch sampler"] = {"rollout.engine": "hf"}
    keys = {"seconds_rollout": "rollout s", "seconds_update": "update s", "seconds_step": "step s",
            "gen_tokens_per_s": "gen tok/s", "train_tokens_per_s": "update tok/s",
            "completion_tokens": "gen tokens", "tokens": "train tokens", "micro_batches": "micro-batches",
            "sequences_skipped": "skipped seqs",
            "outcome_reward": "outcome", "peak_rss_gb": "peak GB"}
    rows, trainer = {}, None
    table = Table(title=f"One RL step at L1 settings (LoRA, G={args.group_size} x B={args.batch_size}, "
                        f"512-token 1-hop items, {args.max_new_tokens} new tokens)")
    table.add_column("engine")
    for label in keys.values():
        table.add_column(label, justify="right")
    for name, extra in variants.items():
        out = args.work / ("engine-" + "".join(c if c.isalnum() else "-" for c in name))
        shutil.rmtree(out, ignore_errors=True)
        cfg = load_config(None, {
            "out": str(out), "steps": 1, "save_every": 0, "seed": 0, "model.path": str(start),
            "model.lora": True, "model.device": "cpu", "data.train": data,
            "rollout.group_size": args.group_size, "rollout.batch_size": args.batch_size,
            "rollout.generation_batch_size": args.group_size * args.batch_size, "agent.chunk_size": 512,
            "rollout.sampling.max_new_tokens": args.max_new_tokens, "rollout.sampling.temperature": 0.7, "rollout.sampling.top_p": 1.0,
            "advantage.alpha": 1.0, "loss.kl_beta": 0.0, "optim.lr": args.lr, "optim.warmup_steps": 0, **extra,
        })
        trainer = Trainer(cfg, quiet=True)
        (line,) = trainer.train()
        rows[name] = {k: line.get(k) for k in keys}
        table.add_row(name, *(f"{line[k]:.3g}" if line.get(k) is not None else "-" for k in keys))
    raw = {budget: _raw_update_tokens_per_s(trainer, budget) for budget in (1024, 2048)}
    Console(width=160).print(table)
    for budget, rate in raw.items():
        print(f"raw forward + backward on one {budget}-token micro-batch: {rate:.0f} tokens/s")
    before, after = rows["before: llamacpp pool"], rows["after: llamacpp parallel"]
    print(f"seconds per step: {before['seconds_step']:.0f} -> {after['seconds_step']:.0f} "
          f"({after['seconds_step'] / before['seconds_step']:.2f}x)")
    payload = _load()
    payload["engines"] = {"setting": "L1", "group_size": args.group_size, "batch_size": args.batch_size,
                          "max_new_tokens": args.max_new_tokens, "data": data, "start": str(start),
                          "rows": rows, "raw_update_tokens_per_s": raw}
    _save(payload)


# -- the learning ladder ---------------------------------------------------------------
# Each rung: its own training questions and a fixed held-out set from another seed (so
# another world), scored greedily at step 0 and every --eval-every steps, each gain paired
# (same items before and after) with a bootstrap 95% interval. Everything goes through the
# CLI a user runs (`rememr1 data revhop`, `rememr1 train`, `rememr1 eval --adapter`), and
# every piece resumes, so rerunning the same command continues where it stopped.
RUNGS = {
    # L1, reading: one fact to find in one 512-token section.
    "l1": {"lengths": "512", "hops": "1", "train_seed": 11, "heldout_seed": 5, "train_n": 256, "heldout_n": 128},
    # L2, memory: 1-2 hops over 2-4 sections, reverse order: the evidence must survive
    # memory updates or be recalled.
    "l2": {"lengths": "1k,2k", "hops": "1,2", "train_seed": 12, "heldout_seed": 6, "train_n": 96, "heldout_n": 32},
}
ADAPTER = Path(__file__).resolve().parents[1] / "src/rememr1/adapters/smollm2-135m-revhop"


def _cli(argv: list[str], log: Path) -> None:
    """Run `python -m rememr1 ARGV`, its output appended to `log`; exit if it fails."""
    import subprocess

    log.parent.mkdir(parents=True, exist_ok=True)
    print("$ rememr1 " + " ".join(argv), flush=True)
    with log.open("a") as fh:
        fh.write("$ rememr1 " + " ".join(argv) + "\n")
        fh.flush()
        rc = subprocess.run([sys.executable, "-m", "rememr1", *argv], stdout=fh, stderr=subprocess.STDOUT).returncode
    if rc:
        sys.exit(f"rememr1 {argv[0]} failed (exit {rc}); see {log}")


def _ladder_data(work: Path, rung: str) -> tuple[str, list[Path]]:
    spec = RUNGS[rung]
    root = work / rung
    common = ["--lengths", spec["lengths"], "--hops", spec["hops"], "--order", "reverse", "--tokenizer", "smollm2"]
    if not list((root / "train").glob("*.parquet")):
        _cli(["data", "revhop", "--out", str(root / "train"), "-n", str(spec["train_n"]), "--seed",
              str(spec["train_seed"]), "--format", "parquet", *common], root / "data.log")
    if not list((root / "heldout").glob("*.json")):
        _cli(["data", "revhop", "--out", str(root / "heldout"), "-n", str(spec["heldout_n"]), "--seed",
              str(spec["heldout_seed"]), "--format", "json", *common], root / "data.log")
    return str(root / "train" / "*.parquet"), sorted((root / "heldout").glob("*.json"))


def _ladder_eval(args, files: list[Path], out: Path, adapter: Path | None, method: str) -> None:
    """Greedy sub-EM of `adapter` (None: the start) on the held-out files, resumable."""
    if adapter is None and args.ladder_start:
        adapter = args.ladder_start
    _cli(["eval", *map(str, files), "--out", str(out), "--method", method, "--chunk-size", "512",
          "--max-new-tokens", str(args.max_new_tokens), "--temperature", "0", "--concurrency",
          str(args.concurrency), "--quiet", *(["--adapter", str(adapter)] if adapter else [])],
         out.parent / "eval.log")


def _heldout_lines(out: Path, method: str) -> dict[str, dict]:
    from rememr1.eval import read_jsonl

    lines = {}
    for f in sorted((out / method).glob("*.jsonl")):
        steps = {s["id"]: s for s in read_jsonl(out / method / "steps" / f.name)}
        for r in read_jsonl(f):
            r["memory_steps"] = [st for st in steps.get(str(r["id"]), {}).get("steps", []) if st["kind"] == "memory"]
            lines[f"{f.stem}/{r['id']}"] = r
    return lines


def paired_gain(before: list[float], after: list[float], *, seed: int = 0) -> dict:
    """Mean of after - before over the same items, with a paired bootstrap 95% interval
    (percentile, 10,000 resamples of items), and the items that flipped each way."""
    import numpy as np
    from scipy import stats

    b, a = np.asarray(before, float), np.asarray(after, float)
    diff = float((a - b).mean())
    if np.all(a - b == (a - b)[0]):  # no variation: the interval is the point
        lo = hi = diff
    else:
        res = stats.bootstrap((b, a), lambda x, y: np.mean(y - x), paired=True, vectorized=False,
                              n_resamples=10_000, confidence_level=0.95, method="percentile",
                              random_state=np.random.default_rng(seed))
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return {"gain": diff, "ci95": [lo, hi], "items": len(b),
            "gained": int(((a > b)).sum()), "lost": int(((a < b)).sum())}


def _heldout_summary(lines: dict[str, dict]) -> dict:
    from rememr1.metrics import wilson_interval

    n = len(lines)
    right = sum(1 for r in lines.values() if r["judge_sub_em"])
    mem = [st for r in lines.values() for st in r["memory_steps"]]
    return {"items": n, "accuracy": right / n if n else None, "accuracy_ci95": list(wilson_interval(right, n)),
            "format_rate": sum(1 for s in mem if s.get("well_formed")) / len(mem) if mem else None,
            "recall_rate": sum(1 for s in mem if s.get("query")) / len(mem) if mem else None,
            "boxed_rate": sum(1 for r in lines.values() if r.get("pred") is not None) / n if n else None}


def cmd_ladder(args) -> None:
    """One rung of the learning ladder: data, the start's held-out score, then RL in
    segments of --eval-every steps with the checkpoint scored after each."""
    rung, method = args.rung, args.method
    train_glob, heldout = _ladder_data(args.work, rung)
    root = args.work / rung
    name = args.run_name or f"{method}-a{args.alpha:g}-lr{args.lr:g}-kl{args.kl:g}{args.tag}"
    run = root / f"rl-{name}"
    start_eval = root / "eval" / f"start-{method}"
    _ladder_eval(args, heldout, start_eval, None, method)
    base = _heldout_lines(start_eval, method)
    points = list(range(args.eval_every, args.steps + 1, args.eval_every))
    if not points or points[-1] != args.steps:
        points.append(args.steps)
    start = str(args.ladder_start or ADAPTER)
    results = {"rung": rung, "method": method, "run": str(run), "start": start,
               "heldout": [str(f) for f in heldout], "train": train_glob,
               "settings": {"group_size": args.group_size, "batch_size": args.batch_size, "lr": args.lr,
                            "alpha": args.alpha, "kl_beta": args.kl, "rollout_temperature": 0.7,
                            "max_new_tokens": args.max_new_tokens, "chunk_size": 512, "lora": True,
                            "loss_agg": "token-mean", "scale_by_std": False, "scoring": "greedy sub-EM"},
               "points": {0: _heldout_summary(base)}}
    for k in points:
        _cli(["train", "--model", start, "--lora", "--data", train_glob, "--out", str(run),
              "-G", str(args.group_size), "-B", str(args.batch_size), "--method", method,
              "--chunk-size", "512", "--max-new-tokens", str(args.max_new_tokens), "--alpha", str(args.alpha),
              "--lr", str(args.lr), "--rollout-engine", "llamacpp", "--steps", str(k),
              "--save-every", str(args.eval_every), "--seed", "0", "--quiet",
              "--set", f"loss.kl_beta={args.kl}", "--set", "rollout.sampling.temperature=0.7",
              "--set", "optim.warmup_steps=0"], run / "train.log")
        out = run / "heldout" / f"step-{k}"
        _ladder_eval(args, heldout, out, run / f"checkpoint-{k}", method)
        after = _heldout_lines(out, method)
        ids = sorted(set(base) & set(after))
        point = _heldout_summary(after)
        point["paired"] = paired_gain([float(bool(base[i]["judge_sub_em"])) for i in ids],
                                      [float(bool(after[i]["judge_sub_em"])) for i in ids])
        results["points"][k] = point
        g = point["paired"]
        print(f"{rung} {name} step {k}: held-out {_pct(point['accuracy'])} "
              f"(start {_pct(results['points'][0]['accuracy'])}), gain {100 * g['gain']:+.1f} points "
              f"[{100 * g['ci95'][0]:+.1f}, {100 * g['ci95'][1]:+.1f}] over {g['items']} items "
              f"({g['gained']} gained, {g['lost']} lost)", flush=True)
        results["train_metrics"] = rl_entry(run)["metrics"]
        payload = _load()
        payload.setdefault("ladder", {})[f"{rung}/{name}"] = results
        _save(payload)
    print_ladder(_load())
    print(f"wrote {plot_ladder(_load())}")


def print_ladder(payload: dict) -> None:
    table = Table(title="Learning ladder: greedy held-out sub-EM, gain over the start paired on the same items [bootstrap 95%]")
    for col in ("rung / run", "step", "held-out", "gain [95%]", "gained / lost", "format", "recall", "boxed"):
        table.add_column(col, justify="left" if col == "rung / run" else "right")
    for key, res in payload.get("ladder", {}).items():
        for step, p in sorted(res["points"].items(), key=lambda kv: int(kv[0])):
            g = p.get("paired")
            table.add_row(key, str(step), f"{_pct(p['accuracy'])} (n={p['items']})",
                          "-" if g is None else f"{100 * g['gain']:+.1f} [{100 * g['ci95'][0]:+.1f}, {100 * g['ci95'][1]:+.1f}]",
                          "-" if g is None else f"{g['gained']} / {g['lost']}",
                          _pct(p["format_rate"]), _pct(p["recall_rate"]), _pct(p["boxed_rate"]))
    Console(width=170).print(table)


def plot_ladder(payload: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    for key, res in payload.get("ladder", {}).items():
        pts = sorted(((int(s), p) for s, p in res["points"].items()), key=lambda kv: kv[0])
        xs = [s for s, _ in pts]
        ys = [100 * p["accuracy"] for _, p in pts]
        lo = [100 * (pts[0][1]["accuracy"] + (p["paired"]["ci95"][0] if p.get("paired") else 0)) for _, p in pts]
        hi = [100 * (pts[0][1]["accuracy"] + (p["paired"]["ci95"][1] if p.get("paired") else 0)) for _, p in pts]
        line, = ax1.plot(xs, ys, marker="o", label=key)
        ax1.fill_between(xs, lo, hi, alpha=0.15, color=line.get_color())
        m = res.get("train_metrics", [])
        ax2.plot([x["step"] for x in m], [x["outcome_reward"] for x in m], marker=".", label=f"{key} outcome")
        rate = "well_formed_rollout_rate" if m and "well_formed_rollout_rate" in m[0] else "format_rate"  # older runs
        if m and m[0].get(rate) is not None:
            ax2.plot([x["step"] for x in m], [x[rate] for x in m], ls="--", label=f"{key} well-formed rollouts")
    ax1.set_title("held-out sub-EM (greedy); band: start + paired 95% interval")
    ax1.set_xlabel("RL step")
    ax1.set_ylabel("%")
    ax1.legend(fontsize=7)
    ax2.set_title("training rollouts per step")
    ax2.set_xlabel("RL step")
    ax2.legend(fontsize=7)
    return _save_figure(fig, "learning-ladder.png")


def _save_figure(fig, name: str) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = RESULTS / name
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def rl_entry(run: Path, max_step: int | None = None) -> dict:
    """What the results JSON keeps of one RL run directory: its setup (from the config the
    trainer wrote), its per-step metrics up to `max_step`, and each reward's slope."""
    import yaml

    from rememr1.eval import read_jsonl

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    lines = [x for x in read_jsonl(run / "metrics.jsonl")
             if x.get("type") == "train" and x["step"] <= (max_step or 10**9)]
    return {
        "start": cfg["model"]["path"], "lora": cfg["model"].get("lora"), "lr": cfg["optim"]["lr"],
        "alpha": (cfg.get("advantage") or cfg["loss"])["alpha"], "group_size": cfg["rollout"]["group_size"],
        "batch_size": cfg["rollout"]["batch_size"], "data": cfg["data"]["train"],
        "engine": cfg["rollout"].get("engine", "hf"),
        "steps_planned": cfg["steps"], "metrics": lines,
        "slopes": {k: slope_ci([x[k] for x in lines if x.get(k) is not None]) for k in REWARDS},
    }


def print_rl(payload: dict) -> None:
    if not payload["rl"]:
        return
    table = Table(title="RL from the SFT checkpoint: reward slope per step [95% interval]")
    table.add_column("run")
    for k in REWARDS:
        table.add_column(k, justify="right")
    for name, run in payload["rl"].items():
        row = [f"{name} ({len(run['metrics'])} steps)"]
        for k in REWARDS:
            s = run["slopes"][k]
            if s["slope"] is None:
                row.append("-")
            elif s.get("constant"):
                row.append("constant")
            else:
                row.append(f"{s['slope']:+.4f} [{s['ci95'][0]:+.4f}, {s['ci95'][1]:+.4f}]")
        table.add_row(*row)
    Console(width=170).print(table)


def plot(payload: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 3.8))
    names = list(payload["eval"])
    for ax, metric in zip(axes[:2], ("format_rate", "accuracy")):
        cells = sorted({k for v in payload["eval"].values() for k in v if k.startswith("rememr1/")})
        width = 0.8 / max(1, len(names))
        for i, name in enumerate(names):
            ys = [(payload["eval"][name].get(c) or {}).get(metric) or 0 for c in cells]
            ax.bar([j + i * width for j in range(len(cells))], ys, width, label=name)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(cells))])
        ax.set_xticklabels([c.split("/", 1)[1].replace("revhop_", "") for c in cells], rotation=60, fontsize=7)
        ax.set_title(f"rememr1 {metric.replace('_', ' ')} on dev")
        ax.legend(fontsize=7)
    for ax, key in zip(axes[2:], ("state_reward", "outcome_reward")):
        for name, run in payload["rl"].items():
            ax.plot([x["step"] for x in run["metrics"]], [x[key] for x in run["metrics"]], marker="o", label=name)
        ax.set_title(f"RL from SFT: {key.replace('_', ' ')}")
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    return _save_figure(fig, "learning.png")


def cmd_speed(args) -> None:
    """llama.cpp decode speed of the built-in model with and without the packaged adapter
    (applied at run time as a GGUF LoRA), same prompt, 128 greedy tokens, 3 runs each."""
    from rememr1.backends import load_backend
    from rememr1.backends.base import ChatRequest, SamplingParams

    prompt = (args.work / "dev" / "eval_revhop_h2_reverse_2k.json")
    text = json.loads(prompt.read_text())[0]["context"][:3000]
    req = ChatRequest(messages=[{"role": "user", "content": "Summarise:\n" + text}])
    sampling = SamplingParams(temperature=0.0, max_new_tokens=128, seed=0)
    rows = {}
    for label, adapter in (("no adapter", False), ("adapter (GGUF LoRA at run time)", True)):
        with load_backend("llamacpp", adapter=adapter) as be:
            be.generate([req], sampling)  # warm-up
            runs = [be.generate([req], sampling)[0] for _ in range(3)]
        rows[label] = {"completion_tokens_per_s": sum(g.completion_tokens for g in runs) / sum(g.seconds for g in runs),
                       "seconds_per_request": sum(g.seconds for g in runs) / len(runs),
                       "prompt_tokens": runs[0].prompt_tokens}
        print(f"{label}: {rows[label]['seconds_per_request']:.2f} s per request "
              f"({rows[label]['prompt_tokens']} prompt tokens, 128 new)")
    payload = _load()
    payload["speed"] = rows
    _save(payload)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=("data", "eval", "rl", "report", "speed", "engines", "ladder"))
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK, help="data and run directories")
    ap.add_argument("--results", type=Path, default=None,
                    help="where learning.json/png go (default: bench/results for the default --work, else WORK/results)")
    ap.add_argument("--lengths", default="2k,4k", help="grid lengths (x 2,3 hops x reverse,forward)")
    ap.add_argument("--extra", default="8k:2:reverse,8k:2:forward", help="more cells, LENGTH:HOPS:ORDER")
    ap.add_argument("--n", type=int, default=3, help="items per grid cell")
    ap.add_argument("--n-key", type=int, default=12, help="items of the key cell (4k, 2 hops, reverse)")
    ap.add_argument("--max-new-tokens-eval", type=int, default=320,
                    help="per step (oracle replies at 4K tokens: ~100 on average, under 300)")
    ap.add_argument("--name", default="base")
    ap.add_argument("--backend", default="llamacpp")
    ap.add_argument("--model", default=None)
    ap.add_argument("--adapter", default=None)
    ap.add_argument("--no-adapter", action="store_true")
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None,
                    help="llamacpp threads (1 while another job holds the other core: spinning threads oversubscribe)")
    ap.add_argument("--start", type=Path, help="rl: the SFT checkpoint to start from")
    ap.add_argument("--sft-run", type=Path, help="report: also record this `rememr1 sft` run's metrics")
    ap.add_argument("--sft-steps", type=int, help="report: ... up to this update (the shipped checkpoint)")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--alphas", default="0.8,1.0")
    ap.add_argument("--group-size", "-G", type=int, default=4)
    ap.add_argument("--batch-size", "-B", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=320)
    ap.add_argument("--lr", type=float, default=5e-6)
    ap.add_argument("--rl-length", default="1k", help="data: document length of the RL training items")
    ap.add_argument("--rl-min-gap", type=float, default=128,
                    help="data: minimum tokens between the RL items' evidence paragraphs")
    ap.add_argument("--rl-max-step", type=int, help="report: RL metrics up to this step (runs stopped apart)")
    ap.add_argument("--lora", action="store_true", help="rl: train the start adapter (LoRA) instead of every weight")
    ap.add_argument("--engine", default="hf", choices=("hf", "llamacpp"),
                    help="rl: what samples the rollouts (llamacpp: LoRA runs, about 2x faster on a CPU; `engines` compares)")
    ap.add_argument("--with-hf", action="store_true", help="engines: also the torch sampler (slow)")
    ap.add_argument("--rung", default="l1", choices=tuple(RUNGS), help="ladder: which rung")
    ap.add_argument("--method", default="rememr1", help="ladder: the agent trained and scored (rememr1 | memagent)")
    ap.add_argument("--alpha", type=float, default=1.0, help="ladder: advantage mix (1.0 = outcome only)")
    ap.add_argument("--kl", type=float, default=0.0, help="ladder: loss.kl_beta")
    ap.add_argument("--eval-every", type=int, default=10, help="ladder: score the checkpoint every N steps")
    ap.add_argument("--ladder-start", type=Path, default=None, help="ladder: start adapter (default: the packaged one)")
    ap.add_argument("--run-name", default=None, help="ladder: run directory name (default from the settings)")
    ap.add_argument("--tag", default="", help="rl: suffix of the run directory (rl-ALPHA-TAG) and its results key")
    args = ap.parse_args()
    global RESULTS
    RESULTS = args.results or (RESULTS if args.work == DEFAULT_WORK else args.work / "results")
    if args.command == "data":
        cmd_data(args)
    elif args.command == "eval":
        cmd_eval(args)
    elif args.command == "rl":
        cmd_rl(args)
    elif args.command == "speed":
        cmd_speed(args)
    elif args.command == "engines":
        cmd_engines(args)
    elif args.command == "ladder":
        cmd_ladder(args)
        return
    payload = _load()
    if args.command == "report":
        for run in sorted(p for p in (args.work / "eval").glob("*") if p.is_dir()):
            payload["eval"][run.name] = summarize_eval(run, args)  # what has finished so far
        if args.sft_run:
            from rememr1.eval import read_jsonl

            lines = read_jsonl(args.sft_run / "metrics.jsonl")
            payload["sft"] = {"config": json.loads((args.sft_run / "sft_config.json").read_text()),
                              "metrics": [x for x in lines if x["step"] <= (args.sft_steps or 10**9)]}
        for run in sorted(p for p in args.work.glob("rl-*") if (p / "metrics.jsonl").exists()):
            # the saved runs, cut at --rl-max-step so runs stopped at different points compare
            payload["rl"][f"alpha={run.name.removeprefix('rl-')}"] = rl_entry(run, args.rl_max_step)
        _save(payload)
        print_eval(payload)
        print_rl(payload)
    if payload["eval"] or payload["rl"]:
        print(f"wrote {plot(payload)}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # the trainer has saved and said how to resume
        sys.exit(130)
