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

from rememr1.agent import Agent
from rememr1.backends.base import SamplingParams
from rememr1.eval import run_eval
from rememr1.viewer import write_viewer

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
    run_eval([data], make_agent=lambda m: Agent(be, method=m, chunk_size=80,
                                                 sampling=SamplingParams(max_new_tokens=16, seed=0)),
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


def test_trace_file_and_cli(run, tmp_path):
    from conftest import ScriptedBackend

    agent = Agent(ScriptedBackend(script), chunk_size=80, sampling=SamplingParams(max_new_tokens=16, seed=0))
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

    exe = chromium_or_skip()
    agent = Agent(ScriptedBackend(script), chunk_size=80, sampling=SamplingParams(max_new_tokens=16, seed=0))
    result = agent.answer(json.loads((run.parent / "eval_revhop_50.json").read_text())[2]["context"], "q?")
    trace = tmp_path / "one.jsonl"
    trace.write_text("".join(json.dumps(line) + "\n" for line in result.trace_json()))
    dom = browse(exe, write_viewer(trace).as_uri(), "--dump-dom").stdout
    assert 'data-ready="1"' in dom
    assert dom.count('class="item"') == 1 and "final step" in dom and 'class="sel"' in dom
    hint = re.compile(r'id="hint">([^<]*)<')
    assert hint.search(dom).group(1) == ""
    # a run of several items still waits for a choice
    dom = browse(exe, write_viewer(run, tmp_path / "many.html").as_uri(), "--dump-dom").stdout
    assert 'data-ready="1"' in dom and 'class="item"' not in dom
    assert hint.search(dom).group(1).startswith("Select an item")
