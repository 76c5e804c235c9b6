"""Builds docs/thesis_index.md: every thesis citation in the code -> where it is implemented."""
import ast, pathlib, re, sys, collections
ROOT = pathlib.Path(__file__).resolve().parents[1]
NUMBER = r"\d+(?:\.(?:\d+|[IVX]+))*"
CITATION = re.compile(rf"\b(Eqs?\.|Figs?\.|Tables?|Alg\.)\s({NUMBER}(?:(?:,\s|\s?[-–]\s?|\sand\s){NUMBER})*)")
SING = {"Eqs.": "Eq.", "Figs.": "Fig.", "Tables": "Table"}
sys.path.insert(0, str(ROOT))
from jaxthesis.experiments import registry
module_to_cmd = {s.module: f"`jaxthesis {s.group} {s.command}`" for s in registry.STUDIES}

def cites(text):
  out = []
  for kind, nums in CITATION.findall(text or ""):
    for n in re.findall(NUMBER, nums):
      out.append(f"{SING.get(kind, kind)} {n}")
  return out

where = collections.defaultdict(set)
for path in sorted((ROOT / "jaxthesis").rglob("*.py")):
  rel = path.relative_to(ROOT).with_suffix("")
  mod = ".".join(rel.parts).removesuffix(".__init__")
  src = path.read_text()
  tree = ast.parse(src)
  covered = set()
  def visit(node, prefix):
    for child in ast.iter_child_nodes(node):
      if isinstance(child, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
        name = f"{prefix}{child.name}"
        seg = ast.get_source_segment(src, child) or ""
        for c in cites(ast.get_docstring(child)):
          if not child.name.startswith("_") or True:
            where[c].add(f"`{mod}.{name}`")
        visit(child, name + ".")
  visit(tree, "")
  all_cites = set(cites(src))
  doc_cites = {c for c, w in where.items() if any(x.startswith(f"`{mod}.") for x in w)}
  for c in all_cites:
    if mod in module_to_cmd:
      where[c].add(module_to_cmd[mod])
    elif c not in doc_cites:
      where[c].add(f"`{mod}`")

def key(c):
  kind, num = c.split(" ", 1)
  order = {"Eq.": 0, "Alg.": 1, "Fig.": 2, "Table": 3}[kind]
  parts = []
  for p in num.split("."):
    parts.append((0, int(p), "") if p.isdigit() else (1, 0, p))
  return (order, parts)

lines = ["# Thesis index", "",
         "Every equation, algorithm, figure and table of the thesis (`../shared/seed/thesis.txt`) that the",
         "code cites, with the functions whose docstrings implement it and the commands that reproduce it.",
         "`tests/test_thesis_index.py` checks that every citation in the code appears here and that the code",
         "uses one notation (`Eq. 5.8`, `Fig. 7.5`, `Table 11.II`, `Alg. 1`). Regenerate with",
         "`python docs/make_thesis_index.py` after adding citations.", "",
         "| thesis | implemented by | reproduced by |", "|---|---|---|"]
for c in sorted(where, key=key):
  impl = sorted(w for w in where[c] if not w.startswith("`jaxthesis ") )
  cmds = sorted(w for w in where[c] if w.startswith("`jaxthesis "))
  lines.append(f"| {c} | {', '.join(impl) or '–'} | {', '.join(cmds) or '–'} |")
(ROOT / "docs" / "thesis_index.md").write_text("\n".join(lines) + "\n")
print(len(where), "citations")
