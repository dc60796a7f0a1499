"""The package's layout shows its architecture: layers import only downwards, files stay small,
and the README's layout table is the tree."""

import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "pix2pix_jax")
# Bottom to top. A module may import modules of its own layer (without cycles) or below.
LAYERS = [("nn", "objectives", "data"), ("config",), ("train",), ("interop",), ("serving",),
          ("eval",)]
MAX_LINES = 400


def modules() -> dict[str, str]:
  """{"pix2pix_jax.nn.conv": path} for every module of the package."""
  found = {}
  for folder, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        found[dotted.removesuffix(".__init__")] = path
  return found


def project_imports(path: str, known: set[str]) -> set[str]:
  """The package modules a file imports (at any depth of the file, lazily too)."""
  out = set()
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
    else:
      continue
    out.update(n for n in names if n in known and n.count(".") >= 2)
  return out


def rank(module: str) -> int:
  package = module.split(".")[1]
  (index,) = [i for i, layer in enumerate(LAYERS) if package in layer]
  return index


def test_every_subpackage_has_a_layer():
  packages = {m.split(".")[1] for m in modules() if m.count(".") >= 1}
  assert packages == {p for layer in LAYERS for p in layer}


def test_no_module_imports_a_higher_layer():
  known = set(modules())
  back_edges = [f"{m} imports {i}" for m, path in modules().items() if m.count(".") >= 2
                for i in sorted(project_imports(path, known)) if rank(i) > rank(m)]
  assert not back_edges, back_edges


def test_no_import_cycles():
  known = set(modules())
  graph = {m: project_imports(path, known) - {m} for m, path in modules().items()}
  state: dict[str, int] = {}

  def visit(m, trail):
    if state.get(m) == 1:
      raise AssertionError("import cycle: " + " -> ".join(trail + [m]))
    if state.get(m) == 2:
      return
    state[m] = 1
    for n in sorted(graph.get(m, ())):
      visit(n, trail + [m])
    state[m] = 2

  for m in sorted(graph):
    visit(m, [])


def test_the_library_does_not_import_the_repositorys_configs():
  offenders = [m for m, path in modules().items()
               if re.search(r"^\s*(import configs|from configs)", open(path).read(), re.M)]
  assert not offenders


@pytest.mark.parametrize("path", sorted(modules().values()))
def test_files_stay_small(path):
  assert sum(1 for _ in open(path)) <= MAX_LINES, path


def test_readme_layout_table_is_the_tree():
  readme = open(os.path.join(ROOT, "README.md")).read()
  section = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
  listed = set(re.findall(r"`(pix2pix_jax/[\w/]+\.py)`", section))
  files = {os.path.relpath(p, ROOT) for m, p in modules().items()
           if not p.endswith("__init__.py")}
  assert listed == files, {"not in the table": sorted(files - listed),
                           "not in the tree": sorted(listed - files)}
