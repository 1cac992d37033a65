"""View: the HTML page escapes all text, colours both roles, and scales to hundreds of samples."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

from tessy.cli.main import main
from tessy.view import render_html, write_view
from tests.test_records import make_record


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
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "records.jsonl").write_text("".join(json.dumps(make_record(f"s{i}")) + "\n" for i in range(300)))
    path = write_view(tmp_path / "run" / "records.jsonl", tmp_path / "view" / "index.html")
    page = path.read_text(encoding="utf-8")
    assert page.count('<details class="sample"') == 300
    assert re.search(r"<th>samples</th><td>300</td>", page)
    assert page.rstrip().endswith("</html>")
    small = write_view(tmp_path / "run", tmp_path / "small.html", limit=5)
    assert small.read_text().count('<details class="sample"') == 5


def _bad_lines(tmp_path):
    """A records.jsonl with three good records and hand-edited bad lines between them."""
    bad_totals = make_record("bad-totals")
    bad_totals["totals"] = "lots"
    bad_spans = make_record("bad-spans")
    bad_spans["spans"] = [1, 2]
    bad_share = make_record("bad-share")
    bad_share["totals"]["teacher_share"] = "high"
    lines = [json.dumps(make_record("g1")), "not json {", json.dumps([1, 2]), json.dumps(bad_totals),
             json.dumps(make_record("g2")), json.dumps(bad_spans), json.dumps(bad_share), "",
             json.dumps(make_record("g3")), '{"id": "torn", "messa']
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join(lines))
    return path


def test_malformed_records_are_skipped_with_their_line(tmp_path):
    warnings = []
    page = write_view(_bad_lines(tmp_path), tmp_path / "v.html", warn=warnings.append).read_text()
    assert page.count('<details class="sample"') == 3
    assert all(f">{n}. g{n}<" in page for n in (1, 2, 3))
    skipped = sorted(int(re.search(r"line (\d+):", w).group(1)) for w in warnings)
    assert skipped == [2, 3, 4, 6, 7, 10], warnings
    assert "line 3: skipped, expected a JSON object, got list" in " ".join(warnings)
    assert "line 4: skipped, cannot be shown (AttributeError" in " ".join(warnings)


def test_view_command_warns_and_renders_the_rest(tmp_path, capsys):
    path = _bad_lines(tmp_path)
    assert main(["view", str(path), "-o", str(tmp_path / "out.html")]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert re.search(r"tessy view: warning: .*records\.jsonl line 2: skipped, not a JSON record", captured.err)
    assert "(6 record lines skipped, see the warnings)" in captured.out
    assert (tmp_path / "out.html").read_text().count('<details class="sample"') == 3
    assert main(["view", str(tmp_path / "missing")]) == 2
    assert "tessy view: error: no records at" in capsys.readouterr().err
