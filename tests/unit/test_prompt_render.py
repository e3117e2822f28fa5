"""The strict `{{ name }}` renderer: placeholders, escapes, syntax errors, injection attempts."""

from __future__ import annotations

import random
import string

import pytest

from schemas.errors import BadRequest, PayloadTooLarge, Unprocessable
from workers.prompt.render import (
    MissingVariables,
    TemplateSyntaxError,
    compile_template,
    compile_text,
)

BIG = 10 * 1024 * 1024


def render(source: str, **values: str) -> str:
    return compile_template(source).render(values, max_bytes=BIG).text


def test_placeholders_are_replaced_by_their_values() -> None:
    """`{{name}}` and `{{ name }}` (spaces or tabs inside) are both placeholders."""
    text = render("Hi {{name}}, {{ greeting }}!{{\tend\t}}", name="Ada", greeting="hello", end=".")
    assert text == "Hi Ada, hello!."
    assert render("{{a}}{{b}}", a="1", b="2") == "12"


def test_a_template_without_placeholders_renders_as_itself() -> None:
    """Text with no `{{` is returned unchanged, braces and all."""
    text = 'JSON: {"a": {"b": 1}} and }} and { single } and ${x} and {% for x in y %}'
    assert render(text) == text


def test_variables_are_listed_once_in_order_of_first_appearance() -> None:
    """A variable used twice is one variable; the order is the order of first use."""
    compiled = compile_text("{{ b }} {{a}} {{b}} {{ c }} {{a}}")
    assert compiled.variables == ("b", "a", "c")


def test_a_repeated_placeholder_gets_the_same_value_everywhere() -> None:
    """Each occurrence is substituted."""
    assert render("{{x}}-{{x}}-{{ x }}", x="7") == "7-7-7"


def test_missing_variables_are_a_422_naming_each_of_them() -> None:
    """Every placeholder without a value is named, in template order."""
    template = compile_template("{{ a }} {{b}} {{c}}")
    with pytest.raises(MissingVariables) as raised:
        template.render({"b": "x"}, max_bytes=BIG)
    assert isinstance(raised.value, Unprocessable)
    assert raised.value.status == 422
    assert raised.value.details == {"missing": ["a", "c"]}
    assert "a, c" in raised.value.message


def test_an_empty_string_value_is_a_value_not_a_missing_variable() -> None:
    """ "" fills a placeholder; only an absent key is missing."""
    assert render("[{{x}}]", x="") == "[]"


def test_unused_variables_are_reported_sorted() -> None:
    """Values for names the template does not use are reported, not an error."""
    result = compile_template("{{a}}").render({"a": "1", "zeta": "", "beta": "2"}, max_bytes=BIG)
    assert result.text == "1"
    assert result.unused == ("beta", "zeta")


@pytest.mark.parametrize(
    "value",
    [
        "{{ other }}",
        "{{a}}",
        "{% for x in range(10) %}boom{% endfor %}",
        "${x}",
        "{{ __class__.__mro__ }}",
        "\\{{ a }}",
        "{{{{",
        "}}{{",
        "<script>{{x}}</script>",
    ],
)
def test_values_are_inserted_as_plain_text_and_never_rescanned(value: str) -> None:
    """A value that looks like template syntax comes out exactly as given."""
    assert render("<{{ v }}>", v=value, a="A", other="O") == f"<{value}>"


@pytest.mark.parametrize(
    "source",
    [
        "{{ __class__ }}",
        "{{ _private }}",
        "{{ a.b }}",
        "{{ a['b'] }}",
        "{{ a[0] }}",
        "{{ x|upper }}",
        "{{ x | safe }}",
        "{{ f() }}",
        "{{ 1 + 1 }}",
        "{{ self }}x{{ a.__globals__ }}",
        "{{ config.items() }}",
        "{{}}",
        "{{ }}",
        "{{",
        "text {{ unterminated",
        "{{{x}}}",
        "{{ x }",
        "{{\nx\n}}",
        "{{ 9lives }}",
        "{{ naïve }}",
        "{{ " + "a" * 65 + " }}",
        "{{- x -}}",
        "{{ x y }}",
    ],
)
def test_anything_but_a_plain_name_inside_braces_is_a_syntax_error(source: str) -> None:
    """Attribute access, indexing, filters, calls, dunders and stray `{{` are refused at
    compile time (400), so they never reach rendering."""
    with pytest.raises(TemplateSyntaxError) as raised:
        compile_text(source)
    assert isinstance(raised.value, BadRequest)
    assert raised.value.status == 400
    assert raised.value.details["field"] == "text"


def test_the_syntax_error_names_line_column_and_snippet() -> None:
    """The error points at the offending `{{`."""
    with pytest.raises(TemplateSyntaxError) as raised:
        compile_text("line one\n  ok {{ fine }} then {{ a.b }} rest")
    details = raised.value.details
    assert (details["line"], details["column"]) == (2, 22)
    assert details["snippet"].startswith("{{ a.b }}")


def test_the_longest_allowed_name_is_64_characters() -> None:
    """A 64-character name is a placeholder; 65 is a syntax error (tested above)."""
    name = "a" * 64
    assert compile_text("{{ " + name + " }}").variables == (name,)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("\\{{ name }}", "{{ name }}"),
        ("a \\{{ b \\{{", "a {{ b {{"),
        ("\\{{ a.b }}", "{{ a.b }}"),
        ("\\{{{{x}}", "{{Z"),
        ("\\\\{{x}}", "\\{{x}}"),
        ("back\\slash {{x}}", "back\\slash Z"),
    ],
)
def test_a_backslash_before_double_braces_writes_them_literally(source: str, expected: str) -> None:
    """`\\{{` is a literal `{{`; a backslash anywhere else is itself."""
    assert render(source, x="Z") == expected


def test_jinja_and_shell_syntax_outside_double_braces_is_plain_text() -> None:
    """`{% %}`, `{# #}`, `${}` and `<%= %>` mean nothing here."""
    source = "{% if x %}{# c #}${HOME}<%= x %>{x}"
    compiled = compile_text(source)
    assert compiled.variables == ()
    assert render(source) == source


def test_chat_templates_render_each_message_and_share_variables() -> None:
    """Placeholders are filled in every message's content; roles and names are kept."""
    template = compile_template(
        None,
        [("system", "", "You are {{ persona }}."), ("user", "ada", "{{question}} ({{persona}})")],
    )
    assert template.kind == "chat"
    assert template.variables == ("persona", "question")
    result = template.render({"persona": "terse", "question": "Why?"}, max_bytes=BIG)
    assert result.messages == (
        ("system", "", "You are terse."),
        ("user", "ada", "Why? (terse)"),
    )


def test_a_syntax_error_in_a_chat_message_names_the_message() -> None:
    """The error's field is the message's content."""
    with pytest.raises(TemplateSyntaxError) as raised:
        compile_template(None, [("system", "", "fine"), ("user", "", "{{ a.b }}")])
    assert raised.value.details["field"] == "messages[1].content"


def test_a_rendering_over_the_size_limit_is_refused_before_it_is_built() -> None:
    """A short template repeating a long value is 413, not a huge string."""
    template = compile_template("{{x}}" * 1000)
    with pytest.raises(PayloadTooLarge):
        template.render({"x": "y" * 10_000}, max_bytes=1_000_000)
    assert len(template.render({"x": "y" * 1000}, max_bytes=1_000_000).text) == 1_000_000


def test_random_templates_render_as_a_reference_substitution() -> None:
    """Over many random templates and values, rendering equals a naive reference: literal
    pieces and values concatenated, values never rescanned."""
    rng = random.Random(1234)
    alphabet = string.ascii_letters + " {}%$\\.\n_"
    names = ["a", "b", "c_1", "Zed"]
    for _ in range(2000):
        pieces: list[tuple[str, str]] = []
        for _ in range(rng.randint(0, 6)):
            literal = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
            while "{{" in literal:  # keep literals free of `{{`
                literal = literal.replace("{{", "{ {")
            if literal.endswith("{") or literal.endswith("\\"):
                literal += " "
            pieces.append(("lit", literal))
            if rng.random() < 0.7:
                pieces.append(("var", rng.choice(names)))
        source = "".join(
            p if kind == "lit" else "{{" + rng.choice(["", " ", "\t"]) + p + " }}"
            for kind, p in pieces
        )
        values = {n: "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6))) for n in names}
        expected = "".join(p if kind == "lit" else values[p] for kind, p in pieces)
        assert compile_template(source).render(values, max_bytes=BIG).text == expected, source
