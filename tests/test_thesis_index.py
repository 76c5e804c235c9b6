"""Every equation, figure, table and algorithm of the thesis cited in the code is in the
thesis index (docs/thesis_index.md), and every citation uses the one notation."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
INDEX = (ROOT / "docs" / "thesis_index.md").read_text()
KINDS = {"Eq.": "Eqs.", "Fig.": "Figs.", "Table": "Tables", "Alg.": None}
NUMBER = r"\d+(?:\.(?:\d+|[IVX]+))*"
CITATION = re.compile(rf"\b(Eqs?\.|Figs?\.|Tables?|Alg\.)\s({NUMBER}(?:(?:,\s|\s?[-–]\s?|\sand\s){NUMBER})*)")
NON_CANONICAL = re.compile(r"\b(?:[Ee]qs?|[Ff]igs?)(?:\s|(?=\d))\d|\beqs?\.\s\d|\bfigs?\.\s\d|\bAlgorithm\s\d")


def _sources():
  return sorted((ROOT / "jaxthesis").rglob("*.py"))


def cited():
  found = {}
  for path in _sources():
    for kind, numbers in CITATION.findall(path.read_text()):
      singular = {"Eqs.": "Eq.", "Figs.": "Fig.", "Tables": "Table"}.get(kind, kind)
      for number in re.findall(NUMBER, numbers):
        found.setdefault(f"{singular} {number}", set()).add(str(path.relative_to(ROOT)))
  return found


def test_every_citation_is_in_the_index():
  missing = {c: sorted(files) for c, files in cited().items()
             if not re.search(rf"(?<![\w.]){re.escape(c)}(?![\d.]\d)", INDEX)}
  assert not missing, f"cited but not in docs/thesis_index.md: {missing}"


def test_one_notation():
  bad = [(str(p.relative_to(ROOT)), m.group(0)) for p in _sources()
         for m in NON_CANONICAL.finditer(p.read_text())]
  assert not bad, f"use 'Eq. 5.8', 'Fig. 7.5', 'Table 11.II', 'Alg. 1': {bad[:20]}"
