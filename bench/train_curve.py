"""Reward curves of RL training on CPU: alpha = 0.8 (outcome + state advantages) against
alpha = 1.0 (outcome only), both from the same start (the built-in SmolLM2-135M-Instruct).

    python bench/train_curve.py                      # 3 steps per alpha, ~15 minutes on 2 cores
    python bench/train_curve.py --steps 30 --group-size 8 --batch-size 2

Data: short RevHop items generated on the fly (1-2 hops, ~1K tokens = 2-3 chunks of 512
tokens). Rollouts at temperature 0.7 with the official "reply" memory fallback: at the
paper's temperature 1.0 the 135M model writes noise, never a well-formed <update>, and
every reward (hence every advantage) is 0. Both runs see the same questions in the same order and, at step 1, the very same
rollouts (same weights, same seeds); they diverge only through their updates.

Writes bench/results/train_curve.json (every metrics line of both runs) and
bench/results/train_curve.png (outcome reward, state reward, format reward per step), and
prints a table of format rate, state reward and outcome reward over the first and last
steps, and the seconds per step split into rollout / reference / update.

With a few steps on a 135M model the curves are noisy: a handful of questions x G
rollouts per step. Read the numbers as "the machinery moves the rewards", not as accuracy.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent

CURVES = (("outcome_reward", "outcome reward"), ("state_reward", "state reward (mean per step)"),
          ("format_reward", "format reward (mean per step)"), ("grad_norm", "gradient norm"))


def make_data(root: Path, n: int, length: str, seed: int, min_gap: int) -> list[str]:
    from rememr1.data.revhop import generate_revhop

    paths = generate_revhop(out_dir=root, lengths=[length], hops=[1, 2], orders=["reverse", "forward"],
                            n=n, seed=seed, tokenizer="smollm2", formats=["parquet"], min_gap=min_gap)
    return [str(p) for p in paths if p.suffix == ".parquet"]


def run(alpha: float, args, data: list[str], out: Path) -> list[dict]:
    from rememr1.rl.config import load_config
    from rememr1.rl.trainer import Trainer

    if out.exists():
        shutil.rmtree(out)
    cfg = load_config(None, {
        "out": str(out), "steps": args.steps, "save_every": 0, "seed": args.seed,
        "model.device": "cpu", "model.dtype": "float32", "data.train": data,
        "rollout.group_size": args.group_size, "rollout.batch_size": args.batch_size,
        "agent.chunk_size": args.chunk_size, "rollout.sampling.max_new_tokens": args.max_new_tokens,
        "rollout.generation_batch_size": args.group_size * args.batch_size,
        "rollout.sampling.temperature": args.temperature, "rollout.sampling.top_p": 1.0, "agent.fallback": args.fallback,
        "advantage.alpha": alpha, "optim.lr": args.lr, "optim.warmup_steps": 0,
    })
    return Trainer(cfg, quiet=args.quiet).train()


def window_mean(lines: list[dict], key: str, first: bool, k: int) -> float | None:
    part = lines[:k] if first else lines[-k:]
    vals = [x[key] for x in part if x.get(key) is not None]
    return sum(vals) / len(vals) if vals else None


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def plot(results: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CURVES), figsize=(4.2 * len(CURVES), 3.6), squeeze=False)
    axes = axes[0]
    for ax, (key, title) in zip(axes, CURVES):
        for label, lines in results.items():
            ax.plot([x["step"] for x in lines], [float("nan") if x[key] is None else x[key] for x in lines],
                    marker="o", label=label)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summarize(results: dict[str, list[dict]], steps: int) -> tuple[dict, Table]:
    """First-vs-last means of the reward columns and median seconds per phase."""
    import statistics

    k = max(1, steps // 4)
    table = Table(title=f"first {k} vs last {k} of {steps} steps (means); seconds per step (medians)")
    for col in ("run", "format reward", "format rate", "state reward", "outcome reward",
                "mean |A|", "grad norm", "steps with A≠0", "s/step", "rollout", "reference", "update"):
        table.add_column(col, justify="right")
    summary = {}
    for label, lines in results.items():
        row: dict = {}
        for key in ("format_reward", "well_formed_rollout_rate", "state_reward", "outcome_reward",
                    "advantage_abs_mean", "grad_norm"):
            row[key] = {"first": window_mean(lines, key, True, k), "last": window_mean(lines, key, False, k)}
        secs = {key: statistics.median(x[key] for x in lines)
                for key in ("seconds_step", "seconds_rollout", "seconds_reference", "seconds_update")}
        row["median_seconds"] = secs
        row["steps_with_signal"] = sum(1 for x in lines if (x.get("advantage_abs_mean") or 0) > 0)
        summary[label] = row

        def pair(key, row=row):
            return f"{_num(row[key]['first'])} → {_num(row[key]['last'])}"

        table.add_row(label, pair("format_reward"), pair("well_formed_rollout_rate"), pair("state_reward"),
                      pair("outcome_reward"), pair("advantage_abs_mean"), pair("grad_norm"),
                      f"{row['steps_with_signal']}/{len(lines)}",
                      f"{secs['seconds_step']:.0f}", f"{secs['seconds_rollout']:.0f}",
                      f"{secs['seconds_reference']:.0f}", f"{secs['seconds_update']:.0f}")
    return summary, table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3, help="training steps per alpha")
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--chunk-size", type=int, default=512)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--temperature", type=float, default=0.7,
                    help="rollout temperature; at the paper's 1.0 the 135M model writes noise and no rollout earns any reward")
    ap.add_argument("--fallback", default="reply",
                    help="memory of a reply without <update>: 'reply' (official code) gives the small model a memory to be rewarded for")
    ap.add_argument("--lr", type=float, default=1e-5, help="higher than the paper's 1e-6 so a few steps show movement")
    ap.add_argument("--length", default="1k", help="RevHop document length (2-3 chunks of 512 tokens)")
    ap.add_argument("--min-gap", type=int, default=64, help="minimum tokens between evidence paragraphs")
    ap.add_argument("--items", type=int, default=32, help="RevHop items per (hops, order) file")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--alphas", default="0.8,1.0")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--report", action="store_true", help="only print the table of a saved run")
    args = ap.parse_args()

    console = Console(width=160)
    if args.report:
        payload = json.loads((args.out / "train_curve.json").read_text())
        _, table = summarize(payload["metrics"], payload["settings"]["steps"])
        console.print(table)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="train_curve."))
    results: dict[str, list[dict]] = {}
    t0 = time.perf_counter()
    try:
        data = make_data(work / "data", args.items, args.length, args.seed, args.min_gap)
        for alpha in [float(a) for a in args.alphas.split(",")]:
            console.print(f"[bold]alpha = {alpha}[/]: {args.steps} steps, G={args.group_size}, "
                          f"{args.batch_size} question(s) per step")
            results[f"alpha={alpha}"] = run(alpha, args, data, work / f"alpha-{alpha}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - t0

    summary, table = summarize(results, args.steps)
    console.print(table)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    payload = {"settings": settings, "total_seconds": total, "summary": summary, "metrics": results}
    (args.out / "train_curve.json").write_text(json.dumps(payload, indent=2))
    plot(results, args.out / "train_curve.png")
    console.print(f"wrote {args.out / 'train_curve.json'} and {args.out / 'train_curve.png'} "
                  f"({total / 60:.1f} min in all)")


if __name__ == "__main__":
    sys.exit(main())
