"""The rule-based boundary predictor (`lexicon`, the default): no model, no training.

Owns the phrase rules for *style* text, written from the annotation categories of the paper's
Table 2, and the pure function `find_style_spans(text)` that applies them (reused by the lexicon
annotator of the predictor pipeline). Categories:

- hesitation and tone: "okay", "hmm", "wait", "well", "alright", "oh", "so", "let's see",
  "I think", "I guess", "hold on", "makes sense", ...
- transition and setup: "to begin with", "first,", "next,", "now,", "but if", "but how",
  "in this case", "for example", "on the other hand", "alternatively,", ...
- narration and connection: "let me think", "let me check", "let me try", "the problem says",
  "I need to figure out", "we need to compute", ...

Promises:

- matching is case-insensitive and on word boundaries; ambiguous words count only where they
  open a clause (start of text, after . ! ? ; : or a newline, after a list marker, or right after
  another style phrase), so "so" in "x, so y" counts but not in "so many", "well" never in
  "as well", "first" only as "First," / "First we";
- a matched phrase includes its trailing punctuation ("Okay," "Wait..." "let's see.");
- `LexiconPredictor.label` scans only a bounded tail of the context (`context_chars`, default
  200) plus the span, so each call costs O(span) whatever the response length;
- a piece is style when at least half of its non-whitespace characters lie inside a match;
  whitespace pieces follow `base.fill_whitespace_verdicts`;
- a verdict is final once `LOOKAHEAD_CHARS` non-whitespace characters follow its piece: the
  longest rule completes within about 20 ("this question is asking" from its "t", plus the
  character that ends the word). Exceptions, where later text reaches further: unbounded
  repetitions ("hmmmm…" written on) and "To solve this <word>," with a word over 10 letters.
  Only there can a cut made as soon as it is final differ from one made after more tokens.
  A verdict is also final once any character follows that no rule can match through or look
  past (`_BREAKER`: brackets, quotes, operators, ...), so in code verdicts settle within a token or two;
  and once no match that could cover its piece can still change: at every place a rule may start,
  from `_REACH_BACK` characters before the piece (context included) to its end, no path of any
  pattern, look-aheads and word boundaries included, reads to the end of the text so far (the
  `regex` module's partial matching says so, `_start_may_change`). In prose that settles a
  verdict a word or two later ("the answer" can no longer grow into "the problem says"). The
  same exceptions hold: only a match longer than `_REACH_BACK` can start before that window.
"""

from __future__ import annotations

import functools
import re

from tessy.predictors.base import BoundaryPredictor, SpanQuery, count_final, fill_whitespace_verdicts, piece_bounds

_PUNCT = r"(?:\*\*|__)?(?:\s*(?:[,!?:;]+|\.{2,}|…|\.(?!\d)|\s[-–—]+(?=\s)))?"  # trailing punctuation, kept with the phrase
_END = r"(?![\w'’-])"  # the phrase ends at a word boundary (not inside "well-known", "so's")
_COMMA = r"\s*(?:,|!|\.(?!\d)|…)"  # this word counts only when punctuation follows it

# Phrases that are style wherever they stand (unambiguous in reasoning text).
_ANYWHERE = [
    # hesitation / tone
    r"h+m+(?:m|h)*", r"u+h+m*", r"u+m+", r"huh", r"whoa", r"oops", r"aha",
    r"let(?:'|’)?s see", r"let me see", r"let me think(?: about (?:this|it|that))?(?: again| more| carefully| step by step)?",
    r"i think", r"i guess", r"i believe", r"i suppose", r"i wonder(?: if| whether)?", r"i mean",
    r"i(?:'|’)m not (?:sure|certain)(?: (?:if|whether|about))?",
    r"hold on(?: a (?:second|sec|moment|minute))?", r"wait a (?:second|sec|moment|minute)",
    r"on second thought", r"(?:that|this|it) (?:makes sense|seems (?:right|correct|off|wrong|odd|plausible))",
    r"makes sense", r"sounds right", r"got it", r"i see", r"to be honest", r"to be safe",
    # transition / setup
    r"to begin with", r"to start with", r"first of all", r"on the other hand", r"in this case",
    r"in that case", r"in other words", r"for example", r"for instance", r"that said",
    r"with that in mind", r"having said that", r"as (?:i|we) (?:said|mentioned|noted)(?: before| earlier)?",
    # narration / connection
    r"let(?:'|’)?s (?:try|check|verify|recall|consider|double[- ]check|make sure|start|begin|think|look|go|recap|re-?read|re-?examine|reconsider|summarize|outline|note|test|figure out|break (?:it|this) down|walk through|see if|see what|see how)",
    r"let me (?:try(?: to)?|check|verify|recall|consider|double[- ]check|make sure|start|begin|look|go|recap|re-?read|re-?examine|reconsider|summarize|outline|note|test|figure out|break (?:it|this) down|walk through|see if|see what|see how|write (?:this|that|it) (?:down|out)|confirm|re-?check|re-?verify|think through)",
    r"i (?:need|have|want) to (?:figure out|find out|work out|make sure|be careful|understand|think about|recall|remember|check|determine|find|solve)",
    r"i should (?:check|verify|double[- ]check|make sure|think|consider|probably|also)",
    r"i (?:remember|recall)(?: that)?", r"i(?:'|’)m (?:trying|supposed) to",
    r"(?:the|this) (?:problem|question|task|prompt) (?:says|states|asks(?: for)?|is asking(?: for)?|wants(?: us)?|gives(?: us)?|requires|mentions|tells us|is about)(?: that)?",
    r"(?:we|i) (?:need|have|want) to (?:compute|calculate|find|figure out|determine|solve|check|output|produce|handle|consider|be careful|make sure|implement|write|return|print|ensure)",
]

# Words and phrases that are style only when they open a clause.
_OPENERS = [
    r"okay", r"ok(?!\w)", r"alright", r"all right", r"so(?! (?:many|much|long|that)\b)",
    r"well(?![-\w])", r"wait", r"oh+", r"ah+", r"now", r"hmm", r"yeah", r"anyway", r"anyhow",
    r"(?:yes|right|sure|great|good|perfect|nice|cool|fine|true|hmm)" + _COMMA,
    r"but(?: (?:if|how|what|why|when|where|then|wait|maybe|perhaps|actually|hold on|now|also|still|again))?",
    r"and(?: (?:then|so|now|also|wait))?" + r"(?=\s*,|\s+(?:then|so|now|also|wait|we|i|let)\b)",
    r"actually", r"maybe", r"perhaps", r"probably", r"hopefully", r"basically", r"essentially",
    r"alternatively", r"similarly", r"additionally", r"also", r"moreover", r"furthermore", r"however",
    r"meanwhile", r"instead", r"otherwise(?=\s*,)", r"then" + _COMMA, r"thus", r"hence", r"therefore",
    r"(?:first(?:ly)?|second(?:ly)?|third(?:ly)?|next|then|finally|lastly|last)"
    + r"(?=\s*,|\s+(?:we|i|let|let's|you|check|compute|consider)\b)",
    r"to (?:start|begin)", r"what if", r"how about", r"what about", r"another (?:approach|idea|way|thought|possibility|option)",
    r"hmm+", r"right\?", r"let(?:'|’)?s", r"let me", r"i(?:'|’)ll", r"we(?:'|’)ll",
    r"here(?:'|’)s (?:the|my) (?:plan|idea|thing)", r"one (?:thing|idea|approach)",
    # answer narration of instruct models ("Here's a function that...", "To solve this, ...")
    r"here(?:'|’)s(?: (?:a|an|the|my|how|what))?", r"here is(?: (?:a|an|the|my|how|what))?",
    r"sure(?=\s*[,!.])", r"certainly", r"of course",
    r"to (?:solve|complete|answer|tackle|approach|do) (?:this|the|that)(?: \w+)?(?=\s*,)",
]

# After a comma, only these open a style clause ("x is even, so y is odd", "..., but wait").
_SOFT_OPENERS = [r"so(?! (?:that|far|many|much|long|the same)\b)", r"but", r"wait", r"hmm+", r"oh+",
                 r"well(?![-\w])", r"okay", r"right\?", r"i think", r"i guess"]


#: Non-whitespace characters after a piece that can still change its verdict (see the module doc).
LOOKAHEAD_CHARS = 24

#: Characters no phrase, trailing punctuation or look-ahead of the rules contains or looks past.
_BREAKER = re.compile(r"[^\w\s'’\-,!?:;.…–—*]")

_NOT_CODE = r"(?!\s*(?:[=(\[]|\.\w))"  # not a variable, call or attribute: "now = time()", "so.x"


def _compile(alternatives: list[str]) -> re.Pattern[str]:
    return re.compile(r"(?:" + "|".join(alternatives) + r")" + _END + _NOT_CODE + _PUNCT, re.IGNORECASE)


_ANYWHERE_RE = re.compile(r"(?<![\w'’])(?:" + "|".join(_ANYWHERE) + r")" + _END + _PUNCT, re.IGNORECASE)
_OPENER_RE = _compile(_OPENERS + _ANYWHERE)
_SOFT_RE = _compile(_SOFT_OPENERS)
# Positions that open a clause: end of sentence punctuation + space, a newline, a list marker or
# a markdown heading/bold opener. Matching starts at the end of these.
_CLAUSE_START_RE = re.compile(
    r"(?:[.!?;:…]+[\"'’”)\]*]*[ \t]+|\n[ \t]*(?:(?:[-*•>]+|\d+[.)]|#+)[ \t]+)?(?:\*\*)?)"
)
_SOFT_START_RE = re.compile(r",[ \t]+")
_WS_RE = re.compile(r"\s*")


def find_style_spans(text: str, *, text_starts_clause: bool = True) -> list[tuple[int, int]]:
    """Character ranges `[start, end)` of `text` that the rules mark as style, sorted; touching
    phrases or phrases only whitespace apart are merged into one range.

    `text_starts_clause=False` says `text` begins mid-sentence (a truncated context), so its
    first character is not treated as the start of a clause.
    """
    spans: list[tuple[int, int]] = []
    for m in _ANYWHERE_RE.finditer(text):
        spans.append(m.span())

    def chain(pos: int, pattern: re.Pattern[str]) -> None:
        # A style phrase at a clause start may be followed by another: "Okay, so let me see."
        while pos < len(text):
            m = pattern.match(text, pos)
            if m is None or m.end() == pos:
                return
            spans.append((pos, m.end()))
            pos = _WS_RE.match(text, m.end()).end()
            pattern = _OPENER_RE

    if text_starts_clause:
        chain(_WS_RE.match(text).end(), _OPENER_RE)
    for m in _CLAUSE_START_RE.finditer(text):
        chain(m.end(), _OPENER_RE)
    for m in _SOFT_START_RE.finditer(text):
        chain(m.end(), _SOFT_RE)
    return _merge(spans, text)


def style_char_mask(text: str, *, text_starts_clause: bool = True) -> list[bool]:
    """One flag per character of `text`: True where it lies inside a style phrase."""
    mask = [False] * len(text)
    for start, end in find_style_spans(text, text_starts_clause=text_starts_clause):
        mask[start:end] = [True] * (end - start)
    return mask


def _merge(spans: list[tuple[int, int]], text: str) -> list[tuple[int, int]]:
    """Sort and merge overlapping spans and spans only whitespace apart ("Okay, so" is one)."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and (start <= merged[-1][1] or text[merged[-1][1]:start].isspace()):
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def label_pieces(context: str, pieces: tuple[str, ...] | list[str], *, context_chars: int = 200) -> list[bool]:
    """The lexicon's verdict per piece (True = style); the synchronous core of `LexiconPredictor`."""
    tail, starts_clause = _context_tail(context, context_chars)
    text = tail + "".join(pieces)
    mask = style_char_mask(text, text_starts_clause=starts_clause)
    verdicts: list[bool | None] = []
    for start, end in piece_bounds(pieces, offset=len(tail)):
        inside = total = 0
        for pos in range(start, end):
            if not text[pos].isspace():
                total += 1
                inside += mask[pos]
        verdicts.append(None if total == 0 else 2 * inside >= total)
    return fill_whitespace_verdicts(verdicts)


def _context_tail(context: str, context_chars: int) -> tuple[str, bool]:
    """The part of `context` the rules read (its last `context_chars`, cut at a whitespace so no
    word is split), and whether it starts a clause (a cut one starts mid-sentence)."""
    if len(context) <= context_chars:
        return context, True
    cut = len(context) - context_chars
    space = context.find(" ", cut)
    return (context[space + 1:] if 0 <= space < len(context) - 1 else context[cut:]), False


# ---- when a verdict is final ----------------------------------------------------------------

#: Characters before a piece where a match that covers it can start (the longest phrase with its
#: punctuation is ~40; longer matches are the unbounded repetitions of the module doc).
_REACH_BACK = 64
#: Follows every pattern below, so no match can end: matching then only says whether a path
#: reached the end of the text (a partial match) or none did (None).
_SENTINEL = "\ue000"


def _explore_assertions(source: str) -> str:
    """`source` with every zero-width test whose answer later text could change made to look at
    that text and then pass: a negative look-ahead (?!X) becomes (?:(?=X)|) and \\b becomes
    (?:(?=\\w)|). Each path of the original is a path of the result, and a path that reads past the
    end of the text, in a look-ahead too, ends in a partial match."""
    out, groups, i = [], [], 0  # groups: per open parenthesis, whether it was a negative look-ahead
    while i < len(source):
        char = source[i]
        if source.startswith("\\b", i):
            out.append("(?:(?=\\w)|)")
            i += 2
        elif char == "\\":
            out.append(source[i : i + 2])
            i += 2
        elif char == "[":  # a character class: copied whole (it may hold parentheses)
            end = i + 1 + (source[i + 1] == "^")
            end += source[end] == "]"
            while source[end] != "]":
                end += 2 if source[end] == "\\" else 1
            out.append(source[i : end + 1])
            i = end + 1
        elif source.startswith("(?!", i):
            out.append("(?:(?=")
            groups.append(True)
            i += 3
        elif char == "(":
            out.append(char)
            groups.append(False)
            i += 1
        elif char == ")":
            out.append(")|)" if groups.pop() else ")")
            i += 1
        else:
            out.append(char)
            i += 1
    return "".join(out)


@functools.cache
def _open_ended_patterns() -> tuple:
    """The three patterns, compiled for partial matching (see `_explore_assertions`)."""
    import regex  # partial matching, which `re` lacks

    return tuple(regex.compile("(?:" + _explore_assertions(p.pattern) + ")" + _SENTINEL, regex.IGNORECASE)
                 for p in (_ANYWHERE_RE, _OPENER_RE, _SOFT_RE))


def _start_may_change(text: str, start: int) -> bool:
    """Whether a rule's match at `start` of `text` (whether one is there, and its extent) may
    still change when text is added: some path of some pattern, look-aheads included, reads to
    the end of `text`. False is for good: paths that fail before the end stay failed."""
    return any(p.match(text, start, partial=True) is not None for p in _open_ended_patterns())


def _starts_settled(text: str, first: int, last: int, known: dict[int, bool]) -> bool:
    """Whether no match covering any of `text[first:last]` can still appear, vanish or change:
    every place a rule may start (a letter after a non-alphanumeric character: rules start with a
    letter, and the ones applied anywhere only after a non-word character) from `_REACH_BACK`
    before `first` up to `last` is settled. `known` keeps the answers per start for one `text`."""
    if _SENTINEL in text:
        return False
    for start in range(max(0, first - _REACH_BACK), last):
        if text[start].isalpha() and (start == 0 or not text[start - 1].isalnum()):
            if start not in known:
                known[start] = _start_may_change(text, start)
            if known[start]:
                return False
    return True


class LexiconPredictor(BoundaryPredictor):
    """Style detection by phrase rules; instant, deterministic, language: English."""

    name = "lexicon"
    lookahead_chars = LOOKAHEAD_CHARS
    cheap = True

    def __init__(self, context_chars: int = 200):
        if context_chars < 0:
            raise ValueError("context_chars must be >= 0")
        self.context_chars = context_chars

    def final_count(self, pieces, context: str = "") -> int:
        tail, _ = _context_tail(context, self.context_chars)
        text = tail + "".join(pieces)
        # Each piece with text by where it ends in `text`: (its first non-whitespace character, its end).
        spans = {end: (start + len(piece) - len(piece.lstrip()), end)
                 for (start, end), piece in zip(piece_bounds(pieces, offset=len(tail)), pieces) if piece.strip()}
        known: dict[int, bool] = {}  # start -> whether a match there may still change

        def settled(after: str) -> bool:
            if _BREAKER.search(after) or sum(not c.isspace() for c in after) >= self.lookahead_chars:
                return True
            return _starts_settled(text, *spans[len(text) - len(after)], known)

        return count_final(pieces, settled)

    async def label(self, query: SpanQuery) -> list[bool]:
        return label_pieces(query.context, query.pieces, context_chars=self.context_chars)
