"""The run viewer: structure and escaping with an HTML parser, and a real headless browser
(Debian's chromium) that renders an item's timeline and must not run injected script."""

from __future__ import annotations

import base64
import gzip
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from rememr1.agent import Agent, AgentConfig
from rememr1.backends.base import SamplingParams
from rememr1.eval import run_eval
from rememr1.viewer import write_run_report, write_viewer

INJECTED = ('<script>document.title="pwned";document.body.dataset.pwned="1"</script>'
            '<img src=x onerror="document.body.dataset.pwned=\'1\'">')


def write_data(path: Path, n: int = 3) -> Path:
    items = []
    for i in range(n):
        context = (f"Document 1:\nThe bridge Harn{i} leads to Osk{i}. " + "Filler words about ships. " * 6
                   + ("Some page said " + INJECTED + ". " if i == 0 else "")
                   + f"Osk{i} was founded by Vell{i}. " + "More filler here. " * 6)
        items.append({"index": i, "id": f"q{i}", "input": f"Who founded the town the bridge leads to? ({i})",
                      "context": context, "answers": [f"Vell{i}"], "num_docs": 50, "length": 400,
                      "data_source": "revhop", "bridge_entities": [f"Osk{i}"]})
    path.write_text(json.dumps(items))
    return path


def script(prompt: str, i: int) -> str:
    section = re.search(r"<section>\n(.*?)\n</section>", prompt, re.S)
    if section is None:
        m = re.search(r"founded by (Vell\d)", prompt)
        return r"\boxed{" + (m.group(1) if m else "nobody") + "}"
    # copy the section into memory (document text, including the injected markup)
    return "<update>" + section.group(1) + "</update><recall>bridge</recall>"


@pytest.fixture(scope="module")
def run(tmp_path_factory, ):
    from conftest import ScriptedBackend

    root = tmp_path_factory.mktemp("viewer")
    data = write_data(root / "eval_revhop_50.json")
    be = ScriptedBackend(script)
    run_eval([data], make_agent=lambda m: Agent(be, AgentConfig(method=m, chunk_size=80),
                                                 SamplingParams(max_new_tokens=16, seed=0)),
             methods=["rememr1", "memagent"], out_dir=root / "run", config={"backend": "scripted"})
    return root / "run"


class Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.data: dict[str, str] = {}
        self._in = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in = dict(attrs).get("id")

    def handle_data(self, data):
        if self._in:
            self.data[self._in] = self.data.get(self._in, "") + data

    def handle_endtag(self, tag):
        self._in = None


def payload_of(page: str) -> dict:
    parser = Collector()
    parser.feed(page)
    return json.loads(gzip.decompress(base64.b64decode(parser.data["payload"].strip())))


def test_page_structure_and_payload(run):
    out = write_viewer(run)
    assert out == run / "report.html"
    page = out.read_text()
    parser = Collector()
    parser.feed(page)
    tags = [t for t, _ in parser.tags]
    # exactly two scripts: the data blob and the page's own code; no link or external src
    scripts = [a for t, a in parser.tags if t == "script"]
    assert len(scripts) == 2 and scripts[0]["type"] == "application/octet-stream"
    assert not any(a.get("src", "data:").split(":")[0] != "data" or a.get("href", "").startswith("http")
                   for _, a in parser.tags)
    assert "table" in tags and "img" in tags  # the run's table and its accuracy plot
    data = payload_of(page)
    assert data["methods"] == ["memagent", "rememr1"] and len(data["items"]) == 6
    item = next(i for i in data["items"] if i["method"] == "rememr1" and i["id"] == "q0")
    lines = [json.loads(x) for x in (run / "rememr1" / "eval_revhop_50.jsonl").read_text().splitlines()]
    line = next(x for x in lines if x["id"] == "q0")
    assert len(item["steps"]) == line["steps"] and item["steps"][-1]["kind"] == "final"
    assert item["names"] == {"bridge_1": "Osk0", "answer": "Vell0"}
    # the memory carried the document text: the injected markup travels as data only
    memories = "".join(data["texts"][s["memory"]] for s in item["steps"] if s["memory"] is not None)
    assert "<script>" in memories and "onerror" in memories
    outside = page.replace(parser.data["payload"], "")
    assert "pwned" not in outside and "onerror" not in outside
    # step records: spans, recall hits that name earlier steps, the entity grid's flags
    spans = [s["span"] for s in item["steps"][:-1]]
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert any(s["hits"] for s in item["steps"])
    assert all(h[0] < s["step"] for s in item["steps"] for h in s["hits"])
    grid = [s["entities"]["bridge_1"] for s in item["steps"][:-1]]
    assert any(flags[0] for flags in grid) and any(flags[1] for flags in grid)


class FirstTable(HTMLParser):
    """The text of each cell of the first <table> of a page, row by row."""

    def __init__(self):
        super().__init__()
        self.rows: list[list[str]] = []
        self._state = "before"  # before -> in -> after
        self._cell = False

    def handle_starttag(self, tag, attrs):
        if tag == "table" and self._state == "before":
            self._state = "in"
        elif self._state == "in" and tag == "tr":
            self.rows.append([])
        elif self._state == "in" and tag in ("td", "th"):
            self.rows[-1].append("")
            self._cell = True

    def handle_endtag(self, tag):
        if tag == "table" and self._state == "in":
            self._state = "after"
        self._cell = self._cell and tag not in ("td", "th")

    def handle_data(self, data):
        if self._cell:
            self.rows[-1][-1] += data


def test_run_report_writes_the_report_files_and_the_page(run, tmp_path):
    """What `rememr1 eval` writes at the end (`write_run_report`): the report of
    `eval.write_report` (report.md, summary.json, the plot), then report.html, whose table
    shows exactly the cells of report.md."""
    out = tmp_path / "run"
    shutil.copytree(run, out)
    for name in ("report.md", "summary.json", "accuracy.png", "report.html"):
        (out / name).unlink(missing_ok=True)
    table, rows = write_run_report(out)
    assert (out / "report.md").read_text() == table + "\n"
    assert json.loads((out / "summary.json").read_text())["rows"] == rows
    assert (out / "accuracy.png").stat().st_size > 1000
    parser = FirstTable()
    parser.feed((out / "report.html").read_text())
    markdown = [[c.strip() for c in line.strip().strip("|").split("|")]
                for line in table.splitlines() if line.startswith("|")]
    del markdown[1]  # the |---| separator
    assert parser.rows == markdown
    assert [r[0] for r in parser.rows] == ["method", "memagent", "rememr1"]


def test_ask_trace_and_eval_steps_load_through_one_reader(run, tmp_path, monkeypatch):
    """`rememr1 ask --trace` writes the step lines an eval steps file holds (plus prompt,
    reply and cost): the same item read from either through `step_entries` gives the same
    viewer steps (the eval side adds only its entity grid)."""
    from conftest import ScriptedBackend
    from typer.testing import CliRunner

    from rememr1.backends import BackendOptions
    from rememr1.cli import app
    from rememr1.viewer.data import _Texts, load_trace, step_entries

    monkeypatch.setattr(BackendOptions, "load", lambda self: ScriptedBackend(script))
    doc = tmp_path / "doc.txt"
    doc.write_text(json.loads((run.parent / "eval_revhop_50.json").read_text())[1]["context"])
    trace = tmp_path / "trace.jsonl"
    res = CliRunner().invoke(app, ["ask", str(doc), "-q", "q?", "--chunk-size", "80", "--max-new-tokens", "16",
                                   "--trace", str(trace), "--quiet"])
    assert res.exit_code == 0, res.output
    trace_lines = [json.loads(x) for x in trace.read_text().splitlines()]
    assert trace_lines[-1]["type"] == "result"
    assert all({"span", "memory", "query", "hits", "recalled_in", "well_formed", "prompt", "reply"} <= set(x)
               for x in trace_lines[:-1])
    eval_steps = next(x for x in map(json.loads, (run / "rememr1" / "steps" / "eval_revhop_50.jsonl").open())
                      if x["id"] == "q1")["steps"]
    texts_trace, texts_eval = _Texts(), _Texts()
    from_trace, from_eval = step_entries(trace_lines[:-1], texts_trace), step_entries(eval_steps, texts_eval)
    assert any(s["hits"] for s in from_eval) and any(s["recalled_in"] for s in from_eval)
    assert [{**s, "entities": None} for s in from_eval] == from_trace
    assert texts_trace.values == texts_eval.values and len(texts_eval.values) > 1  # the same memories
    assert len(load_trace(trace)["payload"]["items"][0]["steps"]) == len(eval_steps)


def test_older_trace_file_and_cli(run, tmp_path):
    """A trace in the older line format (`StepRecord.to_json`: `ask --trace` before the
    step lines, `serve --trace-dir` now) still opens in the viewer."""
    from conftest import ScriptedBackend

    agent = Agent(ScriptedBackend(script), AgentConfig(chunk_size=80), SamplingParams(max_new_tokens=16, seed=0))
    trace = tmp_path / "trace.jsonl"
    with trace.open("w") as fh:
        result = agent.answer(json.loads((run.parent / "eval_revhop_50.json").read_text())[1]["context"], "q?",
                              on_step=lambda ep, rec: fh.write(json.dumps(rec.to_json()) + "\n"))
        fh.write(json.dumps(result.summary_json()) + "\n")
    proc = subprocess.run([sys.executable, "-m", "rememr1", "view", str(trace), "-o", str(tmp_path / "t.html")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    data = payload_of((tmp_path / "t.html").read_text())
    assert len(data["items"]) == 1 and len(data["items"][0]["steps"]) == len(result.steps)
    bad = subprocess.run([sys.executable, "-m", "rememr1", "view", str(tmp_path / "missing")], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def chromium_or_skip() -> str:
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install chromium); the browser test did not run")
    return exe


def browse(exe: str, url: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--virtual-time-budget=15000", *extra, url],
                          capture_output=True, text=True, timeout=180)


def test_browser_renders_a_timeline_and_runs_no_injected_script(run, tmp_path):
    exe = chromium_or_skip()
    page = write_viewer(run, tmp_path / "report.html")
    url = page.as_uri() + "#item=" + "rememr1%2Feval_revhop_50.json%2Fq0" + "&compare=memagent"
    proc = browse(exe, url, "--dump-dom")
    dom = proc.stdout
    assert 'data-ready="1"' in dom, proc.stderr[-2000:]
    assert "pwned" not in dom.split("<body")[0]  # the title was not changed
    assert 'data-pwned' not in dom
    # the chosen item's timeline rendered, with the other method side by side
    assert dom.count('class="item"') == 2 and 'class="cols two"' in dom
    assert 'id="s-' in dom and "final step" in dom
    assert "&lt;script&gt;" in dom  # the injected markup shows as text
    shot = tmp_path / "shot.png"
    browse(exe, url, f"--screenshot={shot}", "--window-size=1400,1000")
    assert shot.exists() and shot.stat().st_size > 10_000


def test_browser_opens_the_only_item_of_a_trace(run, tmp_path):
    """A page with one item (an `ask` or `serve` trace) opens on it, not on an empty pane."""
    from conftest import ScriptedBackend

    from rememr1.eval.lines import trace_lines

    exe = chromium_or_skip()
    agent = Agent(ScriptedBackend(script), AgentConfig(chunk_size=80), SamplingParams(max_new_tokens=16, seed=0))
    result = agent.answer(json.loads((run.parent / "eval_revhop_50.json").read_text())[2]["context"], "q?")
    trace = tmp_path / "one.jsonl"
    trace.write_text("".join(json.dumps(line) + "\n" for line in trace_lines(result)))
    dom = browse(exe, write_viewer(trace).as_uri(), "--dump-dom").stdout
    assert 'data-ready="1"' in dom
    assert dom.count('class="item"') == 1 and "final step" in dom and 'class="sel"' in dom
    hint = re.compile(r'id="hint">([^<]*)<')
    assert hint.search(dom).group(1) == ""
    # a run of several items still waits for a choice
    dom = browse(exe, write_viewer(run, tmp_path / "many.html").as_uri(), "--dump-dom").stdout
    assert 'data-ready="1"' in dom and 'class="item"' not in dom
    assert hint.search(dom).group(1).startswith("Select an item")
