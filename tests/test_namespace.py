"""One import name: the wheel installs `voxtok` and nothing else at the top level, the repo's codec/, lm/, export/
and demo/ folders are its package and subpackages, the public API in a few calls, and no import cycles among
the package's modules (deferred imports inside functions included)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
PACKAGE_DIRS: dict[str, str] = PYPROJECT["package-dir"]


def _module_files() -> dict[str, Path]:
    """Every module of the package by its import name, from the package-dir mapping in pyproject.toml."""
    modules = {}
    nested = {folder for package, folder in PACKAGE_DIRS.items() if package != "voxtok"}
    for package, folder in PACKAGE_DIRS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            if package == "voxtok" and parts[0] in nested:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([package, *parts])] = path
    return modules


MODULES = _module_files()


def _imported_modules(path: Path) -> set[str]:
    """The package modules a file imports anywhere (module level or inside functions), TYPE_CHECKING blocks aside."""
    found = set()
    tree = ast.parse(path.read_text())
    skipped = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
               and "TYPE_CHECKING" in ast.dump(block.test) for node in ast.walk(block)}
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found.update(name for name in names if name in MODULES)
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_the_cycle_finder_finds_a_cycle():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_among_the_package_modules():
    graph = {name: _imported_modules(path) - {name} for name, path in MODULES.items()}
    assert len(graph) > 50
    assert import_cycles(graph) == []


def test_every_module_imports_in_a_fresh_interpreter_in_dependency_order():
    """Leaves first (a module after everything it imports), each in the same fresh interpreter: a module that
    only imports because something else was imported first fails here. Optional third-party packages that are
    not installed are reported, not failed."""
    graph = {name: _imported_modules(path) - {name} for name, path in MODULES.items()}
    order: list[str] = []
    done: set[str] = set()

    def place(name: str) -> None:
        if name not in done:
            done.add(name)
            for dependency in sorted(graph[name]):
                place(dependency)
            order.append(name)

    for name in sorted(graph):
        if not name.endswith(".__main__"):  # importing those runs the CLI
            place(name)
    script = ("import importlib, sys\nmissing = []\nfor name in sys.argv[1:]:\n"
              "    try:\n        importlib.import_module(name)\n"
              "    except ModuleNotFoundError as exc:\n"
              "        if (exc.name or '').split('.')[0] == 'voxtok':\n            raise\n"
              "        missing.append(f'{name} ({exc.name})')\n"
              "print('missing optional:', missing)\n")
    result = subprocess.run([sys.executable, "-c", script, *order], capture_output=True, text=True, timeout=300,
                            cwd=REPO.parent, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    assert result.returncode == 0, result.stderr[-2000:]


OLD_NAMES = frozenset(PACKAGE_DIRS.values())  # codec, lm, export, demo: folders, never import names


def _old_names_used_as_modules(tree: ast.AST) -> list[str]:
    """Strings that name a folder as if it were importable: a module path ("lm.model"), a package given to
    importlib (resources.files("codec"), import_module("export")), or a path into a sibling folder built from the
    module's own file (Path(__file__).parent.parent / "codec"), which breaks once installed as voxtok/."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            value = node.args[0].value
            if name in {"files", "import_module", "find_spec"} and isinstance(value, str) \
                    and value.split(".")[0] in OLD_NAMES:
                found.append(f"line {node.lineno}: {name}({value!r})")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant) \
                and node.right.value in OLD_NAMES and "__file__" in ast.unparse(node.left):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_the_checker_finds_an_old_name_used_as_a_module():
    tree = ast.parse('resources.files("codec")\nPath(__file__).parent.parent / "codec" / "splits"')
    assert len(_old_names_used_as_modules(tree)) == 2


def test_no_module_names_a_folder_as_an_import_name():
    """The CI failure this guards: resources.files("codec") worked from the checkout and failed once the package
    was voxtok; the import graph cannot see strings."""
    bad = {}
    for module, path in MODULES.items():
        found = _old_names_used_as_modules(ast.parse(path.read_text(), str(path)))
        if found:
            bad[module] = found
    assert not bad


def test_pyproject_lists_every_package_folder():
    """A folder with an __init__.py that is missing from `packages` would be left out of the wheel."""
    listed = set(PYPROJECT["packages"])
    folders = {name for name, path in MODULES.items() if path.name == "__init__.py"}
    assert folders == listed
    assert all(name == "voxtok" or name.startswith("voxtok.") for name in listed)


def test_import_voxtok_is_light_and_names_the_public_api():
    code = ("import sys, voxtok; assert 'torch' not in sys.modules, 'import voxtok loaded torch';"
            "print(' '.join(sorted(voxtok.__all__)));"
            "assert all(callable(getattr(voxtok, name)) for name in voxtok.__all__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=REPO.parent)
    assert result.returncode == 0, result.stderr[-2000:]
    assert set(result.stdout.split()) >= {"load", "encode", "decode", "tokenize", "detokenize", "tts"}


def _speech_like(seconds: float, sr: int = 16000) -> np.ndarray:
    """A voiced, gliding harmonic tone with a syllable-rate envelope: enough for a codec to have something to do."""
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 20))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    return (0.1 * voiced * envelope).astype(np.float32)


def test_public_api_round_trips_through_the_shipped_models():
    import voxtok

    samples = _speech_like(1.5)
    codec = voxtok.load()
    codes = voxtok.encode(codec, samples, 1.5)
    assert codes.dtype == np.int64 and codes.shape == (3, 75)
    audio = voxtok.decode(codec, codes, len(samples))
    assert audio.shape == samples.shape and np.isfinite(audio).all() and audio.std() > 0.01
    tokenizer = voxtok.load("voxtok-16k-12hz")
    latents = voxtok.tokenize(tokenizer, samples)
    assert latents.shape == (-(-len(samples) // 1280), 32)
    again = voxtok.detokenize(tokenizer, latents, len(samples))
    assert again.shape == samples.shape and again.std() > 0.01
    with pytest.raises(voxtok.VoxtokError, match="no continuous tokens"):
        voxtok.tokenize(codec, samples)
    with pytest.raises(voxtok.VoxtokError, match=r"latents must be \[frames, 32\]"):
        voxtok.detokenize(tokenizer, latents[:, :5])
    with pytest.raises(voxtok.VoxtokError, match="text is empty"):
        voxtok.tts("   ")


@pytest.mark.slow
def test_the_wheel_installs_voxtok_and_nothing_else(tmp_path):
    """The bar of one import name: a built wheel holds voxtok/ (and its dist-info) only, and installed on its own
    (no repo on the path) `import voxtok` works, `import codec|lm|export|demo` fail, and `voxtok roundtrip` runs
    from another folder."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels)], check=True, capture_output=True, timeout=600)
    wheel = next(wheels.glob("voxtok-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        top_level = archive.read(next(n for n in names if n.endswith(".dist-info/top_level.txt"))).decode().split()
    assert {name.split("/")[0] for name in names} == {"voxtok", next(n for n in names if ".dist-info/" in n)
                                                      .split("/")[0]}
    assert top_level == ["voxtok"]
    assert any(name.startswith("voxtok/pretrained/voxtok-16k-v2/") for name in names)
    assert any(name.startswith("voxtok/lm/pretrained/voxtok-lm-continuous/") for name in names)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "-q", "--target",
                    str(target), str(wheel)], check=True, capture_output=True, timeout=600)
    away = tmp_path / "elsewhere"
    away.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_WAIT_POLICY": "PASSIVE"}
    where = subprocess.run([sys.executable, "-c", "import voxtok, voxtok.lm, voxtok.export; print(voxtok.__file__)"],
                           capture_output=True, text=True, cwd=away, env=env, timeout=120)
    assert where.returncode == 0 and where.stdout.strip().startswith(str(target)), where.stderr
    for name in ("codec", "lm", "export", "demo"):
        gone = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, cwd=away,
                              env=env, timeout=60)
        assert gone.returncode != 0 and "ModuleNotFoundError" in gone.stderr, name
    import soundfile as sf

    sf.write(away / "in.wav", _speech_like(1.0), 16000)
    roundtrip = subprocess.run([sys.executable, "-m", "voxtok", "roundtrip", "in.wav", "-o", "out.wav"],
                               capture_output=True, text=True, cwd=away, env=env, timeout=300)
    assert roundtrip.returncode == 0, roundtrip.stderr[-2000:]
    assert sf.info(str(away / "out.wav")).frames == 16000
    # Package data found by the package's name: the shipped models' folders and the splits.
    code = ("from voxtok.export.cache import shipped_model_dir; from voxtok.eval.runner import read_split; "
            "print(shipped_model_dir(None).name, len(read_split('dev')))")
    data = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=away, env=env,
                          timeout=120)
    assert data.returncode == 0, data.stderr[-2000:]
    name, dev_files = data.stdout.split()
    assert name == "voxtok-16k-v2" and int(dev_files) > 50


def test_a_bare_checkout_imports_voxtok_through_the_symlink_tree(tmp_path):
    """recipes/checkout_path.sh (what gpu_burst.sh runs on a lent GPU, with no pip install): voxtok and its
    subpackages come from the checkout, from any folder."""
    code = "import voxtok, voxtok.lm.model, voxtok.export.protocol; print(voxtok.__file__)"
    result = subprocess.run(["bash", str(REPO / "recipes" / "checkout_path.sh"), sys.executable, "-c", code],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = Path(result.stdout.strip())
    assert loaded.name == "__init__.py" and loaded.parent.name == "voxtok"
    assert loaded.resolve() == REPO / "codec" / "__init__.py"
