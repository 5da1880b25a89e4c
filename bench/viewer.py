"""The run viewer on a big run: file size, build time, and time to an interactive page in
headless chromium, for 1,000 items x 20 steps (synthetic results, realistic memory sizes).

    python bench/viewer.py                     # 1000 x 20
    python bench/viewer.py --items 200 --steps 10

The browser time is chromium's wall time for loading the page, inflating the data,
listing the items and opening one item (`--dump-dom` once the page reports ready), minus
the same for a one-item page (the browser's own start-up). Writes bench/results/viewer.json.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from rich.console import Console

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "viewer.json"
WORDS = ("harbour ship cargo lens lighthouse captain bridge town founded river north mill "
         "Orrin Yard Varrow Point Maren Isle Tolland keeper").split()


def synthetic_run(root: Path, items: int, steps: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    for method in ("rememr1", "memagent"):
        lines, traces = [], []
        for i in range(items // 2):
            memory, step_entries = [], []
            for t in range(steps):
                memory = (memory + [rng.choice(WORDS) for _ in range(25)])[-160:]  # ~160-word memories
                hits = [[rng.randrange(t), 0.3]] if method == "rememr1" and t > 0 and rng.random() < 0.3 else []
                step_entries.append({"step": t, "kind": "memory", "span": [t * 5000, (t + 1) * 5000],
                                     "memory": " ".join(memory), "query": "who built the lens" if hits else None,
                                     "hits": hits, "recalled_in": [], "finish": "stop", "error": None,
                                     "answer": None, "tokens": 300,
                                     "entities": {"bridge_1": [t == 3, t >= 3, False], "answer": [t == 7, t >= 7, False]}})
            step_entries.append({"step": steps, "kind": "final", "span": None, "memory": " ".join(memory),
                                 "query": None, "hits": [], "recalled_in": [], "finish": "stop", "error": None,
                                 "answer": "Orrin Yard", "tokens": 20})
            ok = rng.random() < 0.6
            lines.append({"id": f"q{i}", "file": "eval_big.json", "method": method, "model": "synthetic",
                          "question": f"Who built the lens of lighthouse {i}?", "answers": ["Orrin Yard"],
                          "pred": "Orrin Yard" if ok else "Tolland", "response": r"\boxed{x}",
                          "judge_em": float(ok), "judge_sub_em": float(ok), "judge_f1": float(ok),
                          "length": "100k", "steps": steps + 1, "prompt_tokens": 1, "completion_tokens": 1,
                          "seconds": 1.0, "recalls": sum(1 for s in step_entries if s["hits"]), "error": None})
            traces.append({"id": f"q{i}", "names": {"bridge_1": "Varrow Point", "answer": "Orrin Yard"},
                           "steps": step_entries})
        d = root / method
        (d / "steps").mkdir(parents=True)
        (d / "eval_big.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        (d / "steps" / "eval_big.jsonl").write_text("".join(json.dumps(x) + "\n" for x in traces))
    (root / "config.json").write_text(json.dumps({"backend": "synthetic", "model": "synthetic"}))
    return root


def browser_seconds(exe: str, page: Path, item: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--virtual-time-budget=60000", "--dump-dom", page.as_uri() + "#item=" + item],
                          capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - t0
    if 'data-ready="1"' not in proc.stdout or 'class="item"' not in proc.stdout:
        raise RuntimeError("the page did not render the item: " + proc.stderr[-500:])
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    from rememr1.viewer import write_viewer

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    out: dict = {"items": args.items, "steps": args.steps}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        big = synthetic_run(tmp / "big", args.items, args.steps)
        small = synthetic_run(tmp / "small", 2, 2)
        t0 = time.perf_counter()
        page = write_viewer(big, tmp / "big.html")
        out["build_s"] = time.perf_counter() - t0
        out["file_mb"] = page.stat().st_size / 1e6
        out["raw_step_mb"] = sum(p.stat().st_size for p in big.glob("*/steps/*.jsonl")) / 1e6
        if exe:
            tiny = write_viewer(small, tmp / "small.html")
            base = min(browser_seconds(exe, tiny, "rememr1%2Feval_big.json%2Fq0") for _ in range(2))
            full = min(browser_seconds(exe, page, "rememr1%2Feval_big.json%2Fq7") for _ in range(2))
            out.update({"browser_s": full, "browser_startup_s": base, "page_s": full - base})
        else:
            out["browser"] = "chromium not installed: browser time not measured"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2))
    c = Console()
    c.print(f"{args.items} results x {args.steps + 1} steps: report.html {out['file_mb']:.1f} MB "
            f"(step files {out['raw_step_mb']:.1f} MB), built in {out['build_s']:.1f} s")
    if "page_s" in out:
        c.print(f"headless chromium: {out['browser_s']:.1f} s to a rendered item, of which "
                f"{out['browser_startup_s']:.1f} s browser start-up: the page itself {out['page_s']:.1f} s")


if __name__ == "__main__":
    main()
