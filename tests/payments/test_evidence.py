"""Evidence PDFs: a well-formed file (every cross-reference points at its object), text escaped, within Stripe's
4 MB limit for dispute evidence."""

import re

from payments.evidence import MAX_BYTES, json_pdf, text_pdf


def _xref_is_consistent(pdf: bytes) -> bool:
    startxref = int(re.search(rb"startxref\n(\d+)\n%%EOF\n$", pdf).group(1))
    assert pdf[startxref:].startswith(b"xref\n")
    count = int(re.match(rb"xref\n0 (\d+)\n", pdf[startxref:]).group(1))
    offsets = [int(m) for m in re.findall(rb"(\d{10}) 00000 n ", pdf[startxref:])]
    assert len(offsets) == count - 1
    return all(pdf[offset:].startswith(b"%d 0 obj\n" % number) for number, offset in enumerate(offsets, start=1))


def test_a_text_pdf_is_well_formed_and_escapes_its_text():
    pdf = text_pdf("Certificate (signed)", "key_id: k1\nback\\slash and (parens)")
    assert pdf.startswith(b"%PDF-1.4\n") and _xref_is_consistent(pdf)
    assert b"(Certificate \\(signed\\)) '" in pdf and b"back\\\\slash and \\(parens\\)" in pdf


def test_long_documents_are_paged_and_cut_to_the_size_limit():
    paged = text_pdf("Report", "\n".join(f"line {i}" for i in range(200)))
    assert paged.count(b"/Type /Page ") == 4 and _xref_is_consistent(paged)
    huge = json_pdf("Report", {"values": ["x" * 90] * 80_000})
    assert len(huge) <= MAX_BYTES and b"cut to fit" in huge and _xref_is_consistent(huge)
