"""Dispute evidence documents: plain-text PDFs (Stripe takes PDF, JPEG or PNG for purpose `dispute_evidence`,
https://docs.stripe.com/api/files/create), written here without a PDF library."""

from __future__ import annotations

import json
import textwrap
from typing import Any

LINES_PER_PAGE = 60
WRAP_AT = 95
MAX_BYTES = 4 * 1024 * 1024  # Stripe's limit for a dispute evidence file


def _escape(text: str) -> str:
    text = text.encode("latin-1", "replace").decode("latin-1")
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def text_pdf(title: str, body: str) -> bytes:
    """A PDF of `title` and `body` in Courier, wrapped and paged (content beyond Stripe's size limit is cut)."""
    lines = [title, ""]
    for line in body.splitlines() or [""]:
        lines.extend(textwrap.wrap(line, WRAP_AT, replace_whitespace=False, drop_whitespace=False) or [""])
    pages = [lines[i : i + LINES_PER_PAGE] for i in range(0, len(lines), LINES_PER_PAGE)] or [[]]
    objects: list[bytes] = []
    page_ids = [4 + 2 * i for i in range(len(pages))]
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = " ".join(f"{pid} 0 R" for pid in page_ids)
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Courier >>")
    for page_id, page in zip(page_ids, pages, strict=True):
        stream = "BT /F1 9 Tf 11 TL 40 800 Td " + " ".join(f"({_escape(line)}) '" for line in page) + " ET"
        data = stream.encode("latin-1")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 3 0 R >> >> "
            f"/Contents {page_id + 1} 0 R >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(data) + data + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def json_pdf(title: str, value: Any) -> bytes:
    """A JSON document as a readable PDF, cut to fit Stripe's size limit."""
    body = json.dumps(value, indent=2, sort_keys=True, default=str)
    pdf = text_pdf(title, body)
    while len(pdf) > MAX_BYTES:
        body = body[: len(body) * 3 // 4] + "\n... (cut to fit the evidence size limit)"
        pdf = text_pdf(title, body)
    return pdf
