"""View: the page carries all text as data (escaped, nothing can close a script), colours both roles,
chooses records by --method/--ids/--sample/--limit with one-line errors, and opens fast at 10,000
records (a headless browser shows the first record)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from html.parser import HTMLParser

import pytest

from tessy.cli.main import main
from tessy.view import compact, render_html, select, write_view
from tests.test_records import make_record


class _Page(HTMLParser):
    """Tags of the page and the data of its script elements, by id."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[tuple[dict, str]] = []
        self._in: dict | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in = dict(attrs)
            self.scripts.append((self._in, ""))

    def handle_endtag(self, tag):
        if tag == "script":
            self._in = None

    def handle_data(self, data):
        if self._in is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)


def parse(page: str) -> tuple[list, dict[str, dict]]:
    """(index rows, record bodies by position) of a page."""
    p = _Page()
    p.feed(page)
    data = {a["id"]: json.loads(text) for a, text in p.scripts if a.get("type") == "application/json"}
    index = data.pop("tessy-index")
    return index, data


def ids_shown(page: str) -> list[str]:
    index, bodies = parse(page)
    assert [bodies[f"r{i}"]["id"] for i in range(len(bodies))] == [row[1] for row in index]
    return [row[1] for row in index]


def write_records(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _evil_record():
    r = make_record("id<&>\"", spans=[
        ("student", "thinking", "Okay, <script>alert(1)</script>\n  indented <!-- x", 6),
        ("teacher", "thinking", "x < y && y > z", 7),
        ("student", "answer", "Done & dusted </div>", 4)])
    r["messages"][0]["content"] = "Prompt with <b>tags</b> & ampersands"
    return r


def test_escapes_and_roles():
    page = render_html([_evil_record()], title="T <&>")
    assert "<title>T &lt;&amp;&gt;</title>" in page
    p = _Page()
    p.feed(page)
    for attrs, text in p.scripts:  # no model text can end a script element or open a comment
        assert "<" not in text if attrs.get("type") == "application/json" else "</script" not in text
    assert sum(t == "script" for t, _ in p.tags) == 3  # the index, the record, the page's own script
    index, bodies = parse(page)
    body = bodies["r0"]
    assert index == [[0, 'id<&>"', "tessy", pytest.approx(7 / 17), "stop", 17]]
    assert body["prompt"] == [["user", "Prompt with <b>tags</b> & ampersands"]]  # exactly the text, as data
    (think, spans), (answer, last) = body["sections"]
    assert (think, answer) == ("thinking", "answer")
    assert [s[:2] for s in spans] == [["student", "Okay, <script>alert(1)</script>\n  indented <!-- x"],
                                     ["teacher", "x < y && y > z"]]
    assert last[0][:2] == ["student", "Done & dusted </div>"]
    assert "textContent" in page and "innerHTML" not in page  # text is never put on screen as markup
    assert "white-space: pre-wrap" in page and ".teacher" in page and ".student" in page
    assert "teacher span" in page and "student span" in page  # legend


def test_summary_numbers():
    recs = [make_record("a"), make_record("b", finish_reason="length")]
    page = render_html(recs)
    assert "45.0%" in page  # teacher share 9/20
    assert "stop: 1" in page and "length: 1" in page
    assert ids_shown(page) == ["a", "b"]
    assert "1.50 s" in page  # mean wall time
    assert parse(page)[1]["r0"]["wall"] == 1.5


def test_record_without_spans_shows_response():
    r = make_record("plain", spans=[])
    r["messages"][-1]["content"] = "teacher-only <answer>"
    body = compact(r)
    assert body["sections"] == [] and body["response"] == "teacher-only <answer>"
    assert "\\u003canswer>" in render_html([r])


def test_write_view_hundreds(tmp_path):
    (tmp_path / "run").mkdir()
    write_records(tmp_path / "run" / "records.jsonl", [make_record(f"s{i}") for i in range(300)])
    counts = {}
    path = write_view(tmp_path / "run" / "records.jsonl", tmp_path / "view" / "index.html", counts=counts)
    page = path.read_text(encoding="utf-8")
    assert ids_shown(page) == [f"s{i}" for i in range(300)]
    assert re.search(r"<th>samples</th><td>300</td>", page)
    assert page.rstrip().endswith("</html>")
    assert counts == {"records": 300, "shown": 300, "bytes": len(page.encode())}
    small = write_view(tmp_path / "run", tmp_path / "small.html", limit=5)
    assert ids_shown(small.read_text()) == [f"s{i}" for i in range(5)]


# ---------------------------------------------------------------------------- choosing records


def _mixed(tmp_path):
    records = []
    for i in range(12):
        r = make_record(f"q{i}")
        r["method"] = ("tessy", "teacher_only", "student_only")[i % 3]
        records.append(r)
    return write_records(tmp_path / "records.jsonl", records)


def test_limit(tmp_path, capsys):
    path = _mixed(tmp_path)
    assert main(["view", str(path), "-o", str(tmp_path / "v.html"), "--limit", "4"]) == 0
    assert ids_shown((tmp_path / "v.html").read_text()) == ["q0", "q1", "q2", "q3"]
    assert "wrote " in capsys.readouterr().out
    assert main(["view", str(path), "-o", str(tmp_path / "w.html"), "--limit", "50"]) == 0  # all there are
    assert len(ids_shown((tmp_path / "w.html").read_text())) == 12


def test_sample_is_seeded_and_in_file_order(tmp_path):
    path = _mixed(tmp_path)
    pages = []
    for seed in ("0", "0", "1"):
        assert main(["view", str(path), "-o", str(tmp_path / "v.html"), "--sample", "5", "--seed", seed]) == 0
        pages.append(ids_shown((tmp_path / "v.html").read_text()))
    assert pages[0] == pages[1] and pages[0] != pages[2]
    assert all(len(p) == 5 and len(set(p)) == 5 and p == sorted(p, key=lambda i: int(i[1:])) for p in pages)


def test_ids_in_the_order_given(tmp_path):
    path = _mixed(tmp_path)
    assert main(["view", str(path), "-o", str(tmp_path / "v.html"), "--ids", "q7,q2", "--ids", "q10,q7"]) == 0
    assert ids_shown((tmp_path / "v.html").read_text()) == ["q7", "q2", "q10"]


def test_method(tmp_path):
    path = _mixed(tmp_path)
    assert main(["view", str(path), "-o", str(tmp_path / "v.html"), "--method", "teacher_only"]) == 0
    assert ids_shown((tmp_path / "v.html").read_text()) == ["q1", "q4", "q7", "q10"]
    assert main(["view", str(path), "-o", str(tmp_path / "v.html"), "--method", "tessy,student_only",
                 "--sample", "3", "--limit", "2"]) == 0
    shown = ids_shown((tmp_path / "v.html").read_text())
    assert len(shown) == 2 and all(int(i[1:]) % 3 != 1 for i in shown)


def test_cli_reports_what_it_showed(tmp_path, capsys):
    path = _mixed(tmp_path)
    assert main(["view", str(path), "-o", str(tmp_path / "v.html"), "--method", "tessy"]) == 0
    assert re.search(r"wrote .*v\.html: 4 of 12 records, \d+\.\d MB$", capsys.readouterr().out.strip())


@pytest.mark.parametrize("flags, message", [
    (["--sample", "13"], "cannot sample 13 records: there are only 12"),
    (["--method", "tessy", "--sample", "5"], "cannot sample 5 records: there are only 4 (after the method and id filters)"),
    (["--ids", "q1,nope"], "unknown id 'nope': not among the 12 records"),
    (["--method", "tessy", "--ids", "q1"], "unknown id 'q1': not among the 4 records of method tessy"),
    (["--method", "teacher-only"], "no records of method 'teacher-only'; the methods here: tessy (4), "
                                   "teacher_only (4), student_only (4)"),
])
def test_a_bad_choice_is_one_line_and_writes_nothing(tmp_path, capsys, flags, message):
    path = _mixed(tmp_path)
    assert main(["view", str(path), "-o", str(tmp_path / "v.html"), *flags]) == 2
    err = capsys.readouterr().err
    assert err == f"tessy view: error: {message}\n"
    assert not (tmp_path / "v.html").exists()


@pytest.mark.parametrize("flag", ["--sample", "--limit"])
def test_counts_must_be_positive(tmp_path, capsys, flag):
    assert main(["view", str(_mixed(tmp_path)), flag, "0"]) == 2
    assert "expected an integer at least 1, got 0" in capsys.readouterr().err


def test_select_on_records():
    recs = [make_record(f"x{i}") for i in range(4)]
    assert [r["id"] for r in select(recs, ids=["x3", "x0"])] == ["x3", "x0"]
    assert [r["id"] for r in select(recs, limit=2)] == ["x0", "x1"]
    with pytest.raises(ValueError, match="unknown ids 'a', 'b'"):
        select(recs, ids="a,b")


# ---------------------------------------------------------------------------- bad lines


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
    assert ids_shown(page) == ["g1", "g2", "g3"]
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
    assert ids_shown((tmp_path / "out.html").read_text()) == ["g1", "g2", "g3"]
    assert main(["view", str(tmp_path / "missing")]) == 2
    assert "tessy view: error: no records at" in capsys.readouterr().err


def test_odd_values_still_make_valid_json(tmp_path):
    r = make_record("odd")
    r["timings"]["wall_s"] = float("nan")
    r["spans"][0]["text"] = "half \ud800 a character"
    r["spans"][1]["tokens_student"] = "many"
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps(r) + "\n")
    body = parse(write_view(path, tmp_path / "v.html").read_text())[1]["r0"]
    assert body["wall"] is None and body["sections"][0][1][1][2] == "many"
    assert body["sections"][0][1][0][1] == "half ? a character"


# ---------------------------------------------------------------------------- in a browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _dom(path, tmp_path) -> tuple[str, float]:
    started = time.perf_counter()
    out = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          "--disable-background-networking", f"--user-data-dir={tmp_path / 'chrome'}",
                          "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120)
    return out.stdout, time.perf_counter() - started


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (apt-get install -y chromium)")
def test_a_browser_shows_the_first_of_10000_records_within_seconds(tmp_path):
    records = []
    for i in range(10_000):
        r = make_record(f"s{i}") if i else _evil_record()
        r["method"] = ("tessy", "teacher_only")[i % 2]
        records.append(r)
    path = write_view(write_records(tmp_path / "records.jsonl", records), tmp_path / "view.html")
    dom, seconds = _dom(path, tmp_path)
    record = dom[dom.index('<div id="record">'):]
    assert '<h2>1. id&lt;&amp;&gt;"</h2>' in record
    assert '<span class="span student" title="student: 6 student tokens' in record
    assert '<span class="span teacher"' in record and '<div class="section answer">' in record
    assert "Okay, &lt;script&gt;alert(1)&lt;/script&gt;\n  indented &lt;!-- x" in record  # shown as text
    assert "rows 1–100 of 10000 records" in dom and dom.count("<tr data-i=") == 100
    assert seconds < 30, seconds  # about 2 s here, browser start included (the page with every record: 30 s)
