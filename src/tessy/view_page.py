"""The fixed parts of `tessy view`'s page: its CSS and its script (the data comes from `tessy.view`).

Owns how a record looks in the browser and how the page stays fast at ten thousand records.
The page holds an index (one short row per record, a JSON array) and each record's body as a
JSON object in its own ``<script type="application/json" id="rN">`` element, which the browser
stores without parsing; the script renders one page of the index (100 rows; filter by id, method
and finish reason; sort by any column) and one record at a time, parsing only the body that is
shown. The first record is shown as soon as its body has arrived, before the rest of the file is
read. All model and user text is put into the page with ``textContent``, never as markup.

A record's body (written by `tessy.view.compact`): ``id``, ``method``, ``finish``, ``wall``,
``t`` (spans, teacher share, thinking teacher share, tokens, teacher tokens, generated,
discarded), ``prompt`` (``[role, content]`` pairs), ``sections`` (``[section, [[role, text,
tokens_student, tokens_own, generated, discarded, forced], ...]]``, consecutive spans of one
section together), and ``response`` (the assistant text of a record without spans, else null).
"""

TEACHER_COLOUR = "#ffd8a8"  # orange
STUDENT_COLOUR = "#c5e3ff"  # blue
PAGE_ROWS = 100  # index rows shown at once

CSS = f"""
body {{ font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 70em; color: #222;
       padding: 0 1em; }}
h1 {{ font-size: 1.5em; margin-bottom: .3em; }}
h2 {{ font-size: 1.1em; margin: .2em 0; }}
table.summary td, table.summary th, table.index td, table.index th {{
  padding: .15em .8em; text-align: left; border-bottom: 1px solid #eee; font-size: .92em; }}
table.index {{ border-collapse: collapse; width: 100%; }}
table.index th {{ cursor: pointer; position: sticky; top: 0; background: #fff; user-select: none; }}
table.index tbody tr {{ cursor: pointer; }}
table.index tbody tr:hover {{ background: #f3f3f3; }}
table.index tbody tr.current {{ background: #fff3c4; }}
.indexbox {{ max-height: 22em; overflow: auto; border: 1px solid #ddd; border-radius: 4px; }}
.controls {{ margin: .8em 0 .4em; font-size: .92em; }}
.controls input, .controls select, .controls button {{ font-size: .95em; margin-right: .4em; }}
.legend span {{ display: inline-block; padding: .1em .6em; margin-right: .6em;
  border-radius: 3px; }}
.teacher {{ background: {TEACHER_COLOUR}; }}
.student {{ background: {STUDENT_COLOUR}; }}
.span.forced {{ outline: 1px dashed #555; }}
.span {{ border-radius: 2px; }}
.span + .span {{ box-shadow: -1px 0 0 #fff; }}
.sample {{ border: 1px solid #ccc; border-radius: 6px; margin: 1em 0; padding: .5em 1em; }}
.nav {{ float: right; font-size: .9em; }}
.stats {{ color: #555; font-size: .88em; margin: .3em 0 .6em; }}
.stats b {{ color: #222; }}
.turn, .section {{ white-space: pre-wrap; word-wrap: break-word; font-family: ui-monospace,
  SFMono-Regular, Menlo, monospace; font-size: .86em; line-height: 1.45; }}
.turn {{ background: #f6f6f6; border-left: 3px solid #999; padding: .4em .7em; margin: .3em 0; }}
.label {{ display: block; font-family: system-ui, sans-serif; font-size: .78em; font-weight: 600;
  text-transform: uppercase; letter-spacing: .05em; color: #666; margin-bottom: .2em;
  white-space: normal; }}
.section {{ padding: .4em .7em; margin: .4em 0; border-radius: 4px; }}
.section.thinking {{ border: 1px dashed #888; background: #fcfcfc; }}
.section.answer {{ border: 2px solid #555; }}
.section.response {{ border: 1px solid #bbb; }}
.legend .thinking {{ border: 1px dashed #888; }}
.legend .answer {{ border: 2px solid #555; }}
.legend .forced {{ outline: 1px dashed #555; }}
"""

LEGEND = ('<p class="legend"><span class="teacher">teacher span</span>'
          '<span class="student">student span</span>'
          '<span class="forced">forced (kept past the cut to end an empty hand-over loop)</span>'
          '<span class="thinking">thinking section</span>'
          '<span class="answer">answer section</span></p>')

INDEX_HTML = """<div class="controls">
<input id="q" type="search" placeholder="filter by id" size="24">
<select id="fm"><option value="">every method</option></select>
<select id="ff"><option value="">every finish reason</option></select>
<button id="prev" type="button">&larr; rows</button><button id="next" type="button">rows &rarr;</button>
<span id="where"></span></div>
<div class="indexbox"><table class="index"><thead><tr>
<th data-k="0">#</th><th data-k="1">id</th><th data-k="2">method</th><th data-k="3">teacher share</th>
<th data-k="4">finish</th><th data-k="5">tokens</th></tr></thead><tbody id="rows"></tbody></table></div>
<div id="record"><p>loading the first record&hellip;</p></div>
<noscript><p>This page shows its records with JavaScript; allow scripts for this file.</p></noscript>
"""

# Index rows: [position, id, method, teacher share, finish reason, tokens].
SCRIPT = """(function () {
"use strict";
var PAGE = %(page)d, rows = JSON.parse(document.getElementById("tessy-index").textContent);
var view = rows, page = 0, current = -1, pending = -1, sortKey = 0, sortDir = 1;
function $(id) { return document.getElementById(id); }
function pct(x) { return x === null || x === undefined ? "\\u2013" : (100 * x).toFixed(1) + "%%"; }
function q(x) { return x === null || x === undefined ? "?" : String(x); }
function el(tag, cls, text) {
  var e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function stats(r) {
  var t = r.t, box = el("div", "stats"), parts = [[r.method], " \\u00b7 spans ", [q(t[0])],
    " \\u00b7 teacher share ", [pct(t[1])], " (thinking " + pct(t[2]) + ") \\u00b7 tokens ", [q(t[3])],
    " (teacher " + q(t[4]) + ") \\u00b7 generated " + q(t[5]) + ", discarded " + q(t[6]) + " \\u00b7 finish ",
    [q(r.finish)], " \\u00b7 wall " + (r.wall === null ? "\\u2013" : r.wall.toFixed(1)) + " s"];
  parts.forEach(function (p) { box.appendChild(typeof p === "string" ? document.createTextNode(p) : el("b", "", p[0])); });
  return box;
}
function render(i, r) {
  var box = el("div", "sample"), nav = el("span", "nav");
  [["\\u2190 previous", -1], ["next \\u2192", 1]].forEach(function (b) {
    var a = el("button", "", b[0]); a.type = "button"; a.onclick = function () { step(b[1]); }; nav.appendChild(a);
  });
  box.appendChild(nav);
  box.appendChild(el("h2", "", (i + 1) + ". " + r.id));
  box.appendChild(stats(r));
  r.prompt.forEach(function (m) {
    var d = el("div", "turn " + m[0]); d.appendChild(el("span", "label", m[0]));
    d.appendChild(document.createTextNode(m[1])); box.appendChild(d);
  });
  r.sections.forEach(function (sec) {
    var d = el("div", "section " + sec[0]); d.appendChild(el("span", "label", sec[0]));
    sec[1].forEach(function (s) {
      var sp = el("span", "span " + s[0] + (s[6] ? " forced" : ""), s[1]);
      sp.title = s[0] + ": " + q(s[2]) + " student tokens, " + q(s[3]) + " own tokens, generated " + q(s[4]) +
        ", discarded " + q(s[5]) + (s[6] ? ", forced" : "");
      d.appendChild(sp);
    });
    box.appendChild(d);
  });
  if (!r.sections.length && r.response !== null) {
    var d = el("div", "section response"); d.appendChild(el("span", "label", "response (no spans)"));
    d.appendChild(document.createTextNode(r.response)); box.appendChild(d);
  }
  return box;
}
function show(i) {
  var pane = $("record"), data = $("r" + i);
  if (!data) { pending = i; pane.textContent = "loading record " + (i + 1) + "\\u2026"; return; }
  pending = -1; current = i;
  pane.replaceChildren(render(i, JSON.parse(data.textContent)));
  try { history.replaceState(null, "", "#" + encodeURIComponent(rows[i][1])); } catch (e) { /* file: may refuse */ }
  mark();
}
function step(d) {
  var at = -1;
  for (var j = 0; j < view.length; j++) if (view[j][0] === current) { at = j; break; }
  var to = view[at + d];
  if (!to) return;
  page = Math.floor((at + d) / PAGE); table(); show(to[0]);
}
function mark() {
  var trs = $("rows").children;
  for (var j = 0; j < trs.length; j++) trs[j].className = (+trs[j].dataset.i === current) ? "current" : "";
}
function table() {
  var body = $("rows"), frag = document.createDocumentFragment(), pages = Math.max(1, Math.ceil(view.length / PAGE));
  page = Math.min(Math.max(page, 0), pages - 1);
  view.slice(page * PAGE, (page + 1) * PAGE).forEach(function (row) {
    var tr = el("tr"); tr.dataset.i = row[0];
    [row[0] + 1, row[1], row[2], pct(row[3]), row[4], q(row[5])].forEach(function (c) { tr.appendChild(el("td", "", String(c))); });
    tr.onclick = function () { show(row[0]); };
    frag.appendChild(tr);
  });
  body.replaceChildren(frag);
  $("where").textContent = view.length ? "rows " + (page * PAGE + 1) + "\\u2013" + Math.min(view.length, (page + 1) * PAGE) +
    " of " + view.length + (view.length < rows.length ? " (of " + rows.length + " records)" : " records") : "no records match";
  mark();
}
function refilter() {
  var text = $("q").value.toLowerCase(), m = $("fm").value, f = $("ff").value;
  view = rows.filter(function (r) {
    return (!text || String(r[1]).toLowerCase().indexOf(text) >= 0) && (!m || r[2] === m) && (!f || r[4] === f);
  });
  view.sort(function (a, b) {
    var x = a[sortKey], y = b[sortKey];
    if (x === y) return a[0] - b[0];
    if (x === null) return 1;
    if (y === null) return -1;
    return (x < y ? -1 : 1) * sortDir;
  });
  page = 0; table();
}
function options(id, k) {
  var seen = {};
  rows.forEach(function (r) { seen[r[k]] = 1; });
  Object.keys(seen).sort().forEach(function (v) { var o = el("option", "", v); o.value = v; $(id).appendChild(o); });
}
options("fm", 2); options("ff", 4);
$("q").oninput = refilter; $("fm").onchange = refilter; $("ff").onchange = refilter;
$("prev").onclick = function () { page--; table(); };
$("next").onclick = function () { page++; table(); };
Array.prototype.forEach.call(document.querySelectorAll("th[data-k]"), function (th) {
  th.onclick = function () { var k = +th.dataset.k; sortDir = k === sortKey ? -sortDir : 1; sortKey = k; refilter(); };
});
document.addEventListener("keydown", function (e) {
  if (e.target.tagName === "INPUT" || e.target.tagName === "SELECT") return;
  if (e.key === "j" || e.key === "ArrowDown") { step(1); e.preventDefault(); }
  if (e.key === "k" || e.key === "ArrowUp") { step(-1); e.preventDefault(); }
});
document.addEventListener("DOMContentLoaded", function () { if (pending >= 0) show(pending); });
var wanted = decodeURIComponent(location.hash.slice(1)), start = 0;
for (var j = 0; wanted && j < rows.length; j++) if (String(rows[j][1]) === wanted) { start = j; break; }
page = Math.floor(start / PAGE); table();
if (rows.length) show(start); else $("record").textContent = "no records";
})();
"""


def script() -> str:
    """The page's script, with its settings filled in."""
    return SCRIPT % {"page": PAGE_ROWS}
