"""View: the HTML page escapes all text, colours both roles, and scales to hundreds of samples."""

from __future__ import annotations

import re
import time
from html.parser import HTMLParser

from tessy.records import RunOutput, config_fingerprint
from tessy.view import render_html, write_view
from tests.test_records import CONFIG, make_record


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _evil_record():
    r = make_record("id<&>\"", spans=[
        ("student", "thinking", "Okay, <script>alert(1)</script>\n  indented", 6),
        ("teacher", "thinking", "x < y && y > z", 7),
        ("student", "answer", "Done & dusted </div>", 4)])
    r["messages"][0]["content"] = "Prompt with <b>tags</b> & ampersands"
    return r


def test_escapes_and_roles():
    page = render_html([_evil_record()], title="T <&>")
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "x &lt; y &amp;&amp; y &gt; z" in page
    assert "Done &amp; dusted &lt;/div&gt;" in page
    assert "Prompt with &lt;b&gt;tags&lt;/b&gt; &amp; ampersands" in page
    assert "<title>T &lt;&amp;&gt;</title>" in page
    p = _Collect()
    p.feed(page)
    classes = [a.get("class", "") for t, a in p.tags if t == "span"]
    assert "span student" in classes and "span teacher" in classes
    divs = [a.get("class", "") for t, a in p.tags if t == "div"]
    assert "section thinking" in divs and "section answer" in divs
    assert not any(t == "script" for t, _ in p.tags)
    text = "".join(p.text)  # parsed back, the text is exactly the model's
    assert "Okay, <script>alert(1)</script>\n  indented" in text
    assert "white-space: pre-wrap" in page
    assert "teacher span" in page and "student span" in page  # legend


def test_summary_numbers():
    recs = [make_record("a"), make_record("b", finish_reason="length")]
    page = render_html(recs)
    assert "45.0%" in page  # teacher share 9/20
    assert "stop: 1" in page and "length: 1" in page
    assert page.count('<details class="sample"') == 2
    assert "1.5 s" in page  # wall time


def test_record_without_spans_shows_response():
    r = make_record("plain", spans=[])
    r["messages"][-1]["content"] = "teacher-only <answer>"
    page = render_html([r])
    assert "teacher-only &lt;answer&gt;" in page


def test_write_view_hundreds(tmp_path):
    with RunOutput(tmp_path / "run", config_fingerprint(CONFIG), CONFIG) as out:
        for i in range(300):
            out.write_record(make_record(f"s{i}"))
    t0 = time.perf_counter()
    path = write_view(tmp_path / "run" / "records.jsonl", tmp_path / "view" / "index.html")
    assert time.perf_counter() - t0 < 5
    page = path.read_text(encoding="utf-8")
    assert page.count('<details class="sample"') == 300
    assert re.search(r"<th>samples</th><td>300</td>", page)
    assert page.rstrip().endswith("</html>")
    small = write_view(tmp_path / "run", tmp_path / "small.html", limit=5)
    assert small.read_text().count('<details class="sample"') == 5
