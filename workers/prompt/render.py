"""Strict `{{ name }}` templates: parsed once, filled by plain substitution, nothing executed.

The whole grammar:

- `{{ name }}` is a placeholder. `name` starts with an ASCII letter and holds ASCII letters,
  digits and `_`, at most 64 characters; spaces or tabs may stand inside the braces.
- `\\{{` is a literal `{{` (the backslash is removed). A backslash anywhere else is itself.
- Any other `{{` is a syntax error, reported with its line and column when the template is
  created: `{{ a.b }}`, `{{ __class__ }}`, `{{ x|upper }}`, `{{ f() }}`, `{{{x}}}`, `{{` alone.
- Everything else is plain text: `}}`, `{% for x in y %}`, `${x}`, `<%= x %>`, `{x}`.

There is no expression language: a placeholder is a key into the caller's variables, looked up
in a dict; no attribute, index, filter or call exists to reach anything else. Values are
inserted as given and never scanned again, so a value holding `{{ other }}` or `{% ... %}`
comes out as exactly that text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from schemas.errors import BadRequest, PayloadTooLarge, Unprocessable

NAME_PATTERN = r"[A-Za-z][A-Za-z0-9_]{0,63}"
_SCAN = re.compile(r"\\\{\{|\{\{(?:[ \t]*(" + NAME_PATTERN + r")[ \t]*\}\})?")
_SNIPPET = 40


class TemplateSyntaxError(BadRequest):
    """A `{{` that is neither a placeholder nor escaped."""


class MissingVariables(Unprocessable):
    """Placeholders without a value at render time."""


@dataclass(frozen=True, slots=True)
class CompiledText:
    """A template split once: `parts[0::2]` are literal text, `parts[1::2]` placeholder names."""

    parts: tuple[str, ...]
    variables: tuple[str, ...]  # unique, in order of first appearance
    literal_bytes: int

    def render(self, values: Mapping[str, str]) -> str:
        parts = self.parts
        if len(parts) == 1:
            return parts[0]
        out = list(parts)
        for i in range(1, len(out), 2):
            out[i] = values[out[i]]
        return "".join(out)

    def rendered_bytes(self, value_bytes: Mapping[str, int]) -> int:
        return self.literal_bytes + sum(value_bytes[p] for p in self.parts[1::2])


def compile_text(source: str, *, field: str = "text") -> CompiledText:
    """Parse a template; raises `TemplateSyntaxError` (400) at the first invalid `{{`."""
    if "{{" not in source:
        return CompiledText((source,), (), len(source.encode()))
    parts: list[str] = []
    literal: list[str] = []
    seen: dict[str, None] = {}
    pos = 0
    for match in _SCAN.finditer(source):
        literal.append(source[pos : match.start()])
        pos = match.end()
        if match.group(0) == "\\{{":
            literal.append("{{")
            continue
        name = match.group(1)
        if name is None:
            raise _syntax_error(source, match.start(), field)
        parts.append("".join(literal))
        parts.append(name)
        literal = []
        seen.setdefault(name)
    literal.append(source[pos:])
    parts.append("".join(literal))
    literal_bytes = sum(len(p.encode()) for p in parts[0::2])
    return CompiledText(tuple(parts), tuple(seen), literal_bytes)


def _syntax_error(source: str, at: int, field: str) -> TemplateSyntaxError:
    line = source.count("\n", 0, at) + 1
    column = at - (source.rfind("\n", 0, at) + 1) + 1
    snippet = source[at : at + _SNIPPET].split("\n", 1)[0]
    return TemplateSyntaxError(
        f"invalid placeholder at line {line}, column {column} of {field}: placeholders are "
        "{{ name }} with a name of letters, digits and _ starting with a letter; "
        "write \\{{ for a literal {{",
        details={"field": field, "line": line, "column": column, "snippet": snippet},
    )


@dataclass(frozen=True, slots=True)
class CompiledMessage:
    role: str
    name: str
    content: CompiledText


@dataclass(frozen=True, slots=True)
class Rendered:
    text: str
    messages: tuple[tuple[str, str, str], ...]  # (role, name, content)
    unused: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CompiledTemplate:
    """A text template (`text` set) or a chat template (`messages`), ready to render."""

    text: CompiledText | None
    messages: tuple[CompiledMessage, ...]
    variables: tuple[str, ...]

    @property
    def kind(self) -> str:
        return "text" if self.text is not None else "chat"

    @property
    def source_bytes(self) -> int:
        if self.text is not None:
            return self.text.literal_bytes
        return sum(m.content.literal_bytes for m in self.messages)

    def render(self, values: Mapping[str, str], *, max_bytes: int) -> Rendered:
        """Fill every placeholder. Missing values: 422 naming them; output over `max_bytes`:
        413 (a short template repeating a long value can be large)."""
        missing = [v for v in self.variables if v not in values]
        if missing:
            raise MissingVariables(
                f"missing variables: {', '.join(missing)}",
                details={"missing": missing},
            )
        used = set(self.variables)
        unused = tuple(sorted(k for k in values if k not in used))
        sizes = {v: len(values[v].encode()) for v in self.variables}
        pieces = [self.text] if self.text is not None else [m.content for m in self.messages]
        total = sum(p.rendered_bytes(sizes) for p in pieces)
        if total > max_bytes:
            raise PayloadTooLarge(
                "the rendered template is larger than the component returns",
                details={"rendered_bytes": total, "limit_bytes": max_bytes},
            )
        if self.text is not None:
            return Rendered(self.text.render(values), (), unused)
        messages = tuple((m.role, m.name, m.content.render(values)) for m in self.messages)
        return Rendered("", messages, unused)


def compile_template(
    text: str | None, messages: Sequence[tuple[str, str, str]] = ()
) -> CompiledTemplate:
    """Compile a text template, or chat messages given as (role, name, content)."""
    if text is not None:
        compiled = compile_text(text)
        return CompiledTemplate(compiled, (), compiled.variables)
    out: list[CompiledMessage] = []
    seen: dict[str, None] = {}
    for i, (role, name, content) in enumerate(messages):
        compiled = compile_text(content, field=f"messages[{i}].content")
        out.append(CompiledMessage(role, name, compiled))
        for variable in compiled.variables:
            seen.setdefault(variable)
    return CompiledTemplate(None, tuple(out), tuple(seen))
