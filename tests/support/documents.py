"""Test documents, generated: fair ones of every supported type and hostile ones.

Nothing is downloaded; every file a test parses is made here, so its content (and what a
search must find in it) is known exactly.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence

import docx
import xlsxwriter
from docx.enum.text import WD_BREAK
from fpdf import FPDF
from fpdf.enums import EncryptionMethod

# One sentence per generated document type, distinct enough for a search to find each.
SENTENCES = {
    "pdf": "The lighthouse keeper logged seventeen passing ships during the autumn storm.",
    "docx": "Quarterly revenue from the glacier tours doubled after the new cable car opened.",
    "html": "Migrating swallows rest on the harbour wires before they cross the southern sea.",
    "csv": "Copper kettle",
    "markdown": "The observatory dome rotates on twelve brass wheels greased every spring.",
    "xlsx": "Walnut desk",
    "json": "violet-hill-station",
    "text": "A plain text note about the orchard's pear harvest and the cider press.",
}


def pdf(
    pages: Sequence[str],
    *,
    outline: Sequence[tuple[str, int, int]] = (),
    title: str = "",
    user_password: str | None = None,
    owner_password: str = "",
) -> bytes:
    """A PDF with one page per text; `outline` entries are (title, 1-based page, level)."""
    doc = FPDF()
    doc.set_font("Helvetica", size=12)
    if title:
        doc.set_title(title)
    if owner_password or user_password:
        doc.set_encryption(
            owner_password=owner_password or "owner",
            user_password=user_password,
            encryption_method=EncryptionMethod.RC4,
        )
    marks: dict[int, list[tuple[str, int]]] = {}
    for name, page, level in outline:
        marks.setdefault(page, []).append((name, level))
    for number, text in enumerate(pages, start=1):
        doc.add_page()
        for name, level in marks.get(number, []):
            doc.start_section(name, level=level)
        doc.multi_cell(0, 8, text)
    return bytes(doc.output())


def raw_pdf(objects: Sequence[str], *, root: int = 1) -> bytes:
    """A PDF assembled from object bodies (object n is objects[n-1]), with a correct xref."""
    out = io.BytesIO()
    out.write(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1"))
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    trailer = (
        f"trailer\n<< /Size {len(objects) + 1} /Root {root} 0 R >>\nstartxref\n{xref}\n%%EOF\n"
    )
    out.write(trailer.encode())
    return out.getvalue()


def pdf_declaring_pages(count: int) -> bytes:
    """A one-page PDF whose page tree claims `count` pages."""
    return raw_pdf(
        [
            "<< /Type /Catalog /Pages 2 0 R >>",
            f"<< /Type /Pages /Kids [3 0 R] /Count {count} >>",
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
        ]
    )


def pdf_with_page_tree_loop() -> bytes:
    """A PDF whose page tree contains itself (Pages -> Kids -> Pages ...)."""
    return raw_pdf(
        [
            "<< /Type /Catalog /Pages 2 0 R >>",
            "<< /Type /Pages /Kids [3 0 R] /Count 2 >>",
            "<< /Type /Pages /Parent 2 0 R /Kids [2 0 R 4 0 R] /Count 2 >>",
            "<< /Type /Page /Parent 3 0 R /MediaBox [0 0 612 792] >>",
        ]
    )


def docx_file(
    blocks: Sequence[tuple[str, str]], *, table: Sequence[Sequence[str]] = (), title: str = ""
) -> bytes:
    """A DOCX of ("h1".."h3" | "p" | "li" | "pagebreak", text) blocks, then an optional table."""
    document = docx.Document()
    if title:
        document.core_properties.title = title
    for kind, text in blocks:
        if kind.startswith("h"):
            document.add_heading(text, level=int(kind[1:]))
        elif kind == "li":
            document.add_paragraph(text, style="List Bullet")
        elif kind == "pagebreak":
            document.add_paragraph().add_run().add_break(WD_BREAK.PAGE)
        else:
            document.add_paragraph(text)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                grid.cell(r, c).text = value
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def xlsx_file(sheets: dict[str, Sequence[Sequence[object]]]) -> bytes:
    out = io.BytesIO()
    workbook = xlsxwriter.Workbook(out, {"in_memory": True})
    for name, rows in sheets.items():
        sheet = workbook.add_worksheet(name)
        for r, row in enumerate(rows):
            sheet.write_row(r, 0, list(row))
    workbook.close()
    return out.getvalue()


def replace_member(archive: bytes, name: str, data: bytes, *, add: bool = False) -> bytes:
    """The zip `archive` with member `name` replaced by (or, with `add`, extended by) `data`."""
    source = zipfile.ZipFile(io.BytesIO(archive))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            if info.filename != name or add:
                target.writestr(info, source.read(info.filename))
        if name not in source.namelist() or not add:
            target.writestr(name, data)
    return out.getvalue()


def zip_bomb(base: bytes, *, inflated_bytes: int) -> bytes:
    """A DOCX/XLSX carrying an extra member of `inflated_bytes` zeros (deflates ~1000:1)."""
    out = io.BytesIO()
    source = zipfile.ZipFile(io.BytesIO(base))
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            target.writestr(info, source.read(info.filename))
        with target.open("customXml/padding.bin", "w", force_zip64=True) as member:
            chunk = bytes(1024 * 1024)
            for _ in range(inflated_bytes // len(chunk)):
                member.write(chunk)
    return out.getvalue()


BILLION_LAUGHS = b"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<!DOCTYPE w:document [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
  <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
  <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">
<w:body><w:p><w:r><w:t>&lol9;</w:t></w:r></w:p></w:body></w:document>"""

HTML_PAGE = f"""<!doctype html>
<html><head><title>Harbour notes</title>
<script>var leaked = "SCRIPT-SECRET";</script><style>body {{ color: red; }}</style></head>
<body><nav><a href="/">Home</a> <a href="/about">About the harbour office</a></nav>
<main><article><h1>Harbour notes</h1><h2>Birds</h2>
<p>{SENTENCES["html"]}</p>
<p>Gulls gather near the fish market at dawn, long before the first boat returns.</p>
<h2>Tides</h2><p>The spring tide reached the second step of the old pier on Tuesday.</p>
<table><tr><th>Day</th><th>High tide</th></tr><tr><td>Monday</td><td>06:12</td></tr></table>
<script>document.write("INLINE-SCRIPT-SECRET")</script>
</article></main>
<footer>Copyright 2026 Harbour office. Privacy policy. Cookie settings.</footer>
</body></html>
""".encode()

DIV_PAGE = b"""<html><body><div class="menu"><div>Menu</div><div>Login</div></div>
<div class="content"><div>Divs only heading</div>
<div>This page is made only of div elements and still carries a real paragraph about birds.</div>
<div>Another paragraph explains that swallows fly south in autumn and come back in spring.</div>
</div><div class="foot">Footer text 2026</div></body></html>"""

MARKDOWN = f"""# Observatory

Intro paragraph about the hill.

## Dome

{SENTENCES["markdown"]}
It was built in 1911.

```
# not a heading, code
print("hi")
```

## Telescope

| lens | mm |
|---|---|
| main | 400 |
""".encode()

CSV = f"""item,colour,price
{SENTENCES["csv"]},copper,42
Glass jar,clear,3
""".encode()
