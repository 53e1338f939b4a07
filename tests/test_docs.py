"""The documentation does what it says.

* Every Python block of README.md and docs/*.md runs (in a temporary directory, each page's
  blocks in order in one namespace), except blocks marked ``<!-- not-run: reason -->`` on the
  line before: those must compile, their ``adptycho`` imports must exist and every call of an
  imported adptycho function must bind to its signature.
* Every ``adptycho ...`` command shown in README.md, docs/ and experiments/*/README.md names a
  subcommand that exists and only options that its ``--help`` lists; every
  ``python experiments/...`` command names a script that exists and options it defines; every
  ``pip install -e ".[extra]"`` names an extra of setup.cfg.
* The results tables are current: ``experiments/report.py --check`` finds nothing, and it does
  find a rendered table edited by hand, a results table typed outside a rendered block and a
  cited file that does not exist.
* The README stays a front page (at most 200 lines) and every docs page is in the site's nav.
"""

from __future__ import annotations

import ast
import configparser
import functools
import glob
import importlib
import importlib.util
import inspect
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUIDE = ["README.md"] + sorted(os.path.relpath(p, ROOT)
                               for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
ALL_PAGES = GUIDE + sorted(os.path.relpath(p, ROOT) for p in
                           glob.glob(os.path.join(ROOT, "experiments", "*", "README.md")))
FENCE = re.compile(r"(?P<before>[^\n]*)\n```(?P<info>[\w-]*)\n(?P<code>.*?)\n```", re.S)
SHELL_INFOS = {"", "bash", "sh", "console", "shell"}


def read(page):
    with open(os.path.join(ROOT, page)) as f:
        return f.read()


def blocks(page):
    """(info, code, marked not-run) for every fenced block of a page."""
    text = "\n" + read(page)
    return [(m.group("info"), m.group("code"), m.group("before").startswith("<!-- not-run:"))
            for m in FENCE.finditer(text)]


def report_module():
    spec = importlib.util.spec_from_file_location("_docs_report",
                                                  os.path.join(ROOT, "experiments", "report.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- Python blocks -------------------------------------------------------------------------------

RUN_PAGES = [p for p in GUIDE if any(info == "python" and not skip
                                     for info, _, skip in blocks(p))]


@pytest.mark.parametrize("page", RUN_PAGES)
def test_python_blocks_run(page, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    ran = 0
    for info, code, skip in blocks(page):
        if info == "python" and not skip:
            exec(compile(code, f"{page} (python block)", "exec"), namespace)
            ran += 1
    assert ran > 0
    assert capsys.readouterr().out  # every page's example prints what it made


def _adptycho_names(tree):
    """Names an illustrative block imports from adptycho, as {local name: object}."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("adptycho"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"
                names[alias.asname or alias.name] = getattr(module, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("adptycho"):
                    importlib.import_module(alias.name)
    return names


def _check_calls(tree, names, where):
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        target = None
        if isinstance(func, ast.Name) and func.id in names:
            target = names[func.id]
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) \
                and func.value.id in names:  # Calibration.load(...)
            target = getattr(names[func.value.id], func.attr, None)
            assert target is not None, f"{where}: {func.value.id}.{func.attr} does not exist"
        if target is None or not callable(target):
            continue
        signature = inspect.signature(target)
        args = [None] * len(node.args)
        kwargs = {k.arg: None for k in node.keywords if k.arg is not None}
        try:
            signature.bind(*args, **kwargs)
        except TypeError as error:
            raise AssertionError(f"{where}: {ast.unparse(node)[:80]} does not fit "
                                 f"{target.__name__}{signature}: {error}") from None


@pytest.mark.parametrize("page", GUIDE)
def test_illustrative_python_blocks_fit_the_api(page):
    for info, code, skip in blocks(page):
        if info != "python" or not skip:
            continue
        tree = ast.parse(code)
        _check_calls(tree, _adptycho_names(tree), page)


# --- shell commands ------------------------------------------------------------------------------

def commands(page):
    """Every command line of the page's shell blocks (continuations joined, comments cut)."""
    out = []
    for info, code, _ in blocks(page):
        if info not in SHELL_INFOS:
            continue
        for line in code.replace("\\\n", " ").split("\n"):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                while words and re.match(r"^[A-Z_]+=", words[0]):  # VAR=value prefixes
                    words = words[1:]
                if words:
                    out.append(words)
    return out


@functools.lru_cache(maxsize=None)
def cli_help(subcommand):
    run = subprocess.run([sys.executable, "-m", "adptycho.cli", subcommand, "--help"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={**os.environ, "PYTHONPATH": ROOT})
    assert run.returncode == 0, f"adptycho {subcommand} --help failed: {run.stderr[-300:]}"
    return run.stdout


def _options(words):
    return [w.split("=")[0] for w in words if w.startswith("--")]


def extras():
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    return set(config["options.extras_require"])


def _script_sources(script):
    """The text of an experiment script and of the experiment modules it loads by file name
    (``spec_from_file_location(..., "oversampling.py")``: options can be defined there)."""
    with open(script) as f:
        source = f.read()
    for name in set(re.findall(r"[\"'](\w+\.py)[\"']", source)):
        for folder in (os.path.dirname(script), os.path.join(ROOT, "experiments")):
            path = os.path.join(folder, name)
            if os.path.exists(path) and os.path.abspath(path) != os.path.abspath(script):
                with open(path) as f:
                    source += f.read()
                break
    return source


@pytest.mark.parametrize("page", ALL_PAGES)
def test_commands_match_the_cli_and_scripts(page):
    for words in commands(page):
        shown = " ".join(words)
        if words[0] == "adptycho":
            help_text = cli_help(words[1])
            for option in _options(words[2:]):
                assert re.search(rf"{re.escape(option)}(?![\w-])", help_text), \
                    f"{page}: `{shown}`: adptycho {words[1]} has no option {option}"
        elif words[0] == "python" and len(words) > 1 and words[1].startswith("experiments/"):
            script = os.path.join(ROOT, words[1])
            assert os.path.exists(script), f"{page}: `{shown}`: {words[1]} does not exist"
            source = _script_sources(script)
            for option in _options(words[2:]):
                assert f'"{option}"' in source, f"{page}: `{shown}`: {words[1]} has no {option}"
        elif words[0].startswith("./experiments/"):
            assert os.path.exists(os.path.join(ROOT, words[0])), f"{page}: `{shown}`"
        elif words[:3] == ["pip", "install", "-e"]:
            extra = re.fullmatch(r"\.\[(\w+)\]", words[3])
            assert extra and extra.group(1) in extras(), f"{page}: `{shown}`: no such extra"


def test_quick_start_is_what_ci_runs():
    """README's two quick-start commands, exactly, and .ci/run runs them."""
    text = read("README.md")
    assert '```\npip install -e ".[test]" && adptycho demo\n```' in text
    assert "```\npytest -q\n```" in text
    ci = read(".ci/run")
    assert 'pip install -q -e ".[test]"' in ci and "pytest -q" in ci
    assert "mkdocs build --strict" in ci


# --- results tables ------------------------------------------------------------------------------

def test_results_tables_are_current():
    problems = report_module().check()
    assert problems == [], "\n".join(problems) + "\n(run: python experiments/report.py)"


def test_report_check_finds_a_hand_edited_table_and_a_missing_file(tmp_path, monkeypatch):
    report = report_module()
    folder = tmp_path / "experiments" / "real_data"
    folder.mkdir(parents=True)
    with open(os.path.join(ROOT, "experiments", "real_data", "figures.json")) as f:
        (folder / "figures.json").write_text(f.read())
    for png in ("tike_siemens_star.png", "petra_p25_nearfield.png"):
        (folder / png).write_bytes(b"")
    page = "# real data\n\n<!-- report:real-data -->\n<!-- report:end -->\n"
    (folder / "README.md").write_text(page)
    monkeypatch.setattr(report, "ROOT", str(tmp_path))
    assert report.main([]) == 0
    rendered = (folder / "README.md").read_text()
    assert "| tike_siemens_star | 30 |" in rendered
    assert report.check() == []
    # a number typed over the rendered one
    last = rendered.split("| tike_siemens_star |")[1].split("|")[7].strip()
    (folder / "README.md").write_text(rendered.replace(f"| {last} |", "| 0.0128 |", 1))
    assert any("differs from its rendering" in p for p in report.check())
    # a results table typed outside a rendered block
    (folder / "README.md").write_text(rendered + "\n| scan | residual | drop |\n|---|---|---|\n"
                                      "| tike | 0.0128 | 14.1x |\n")
    assert any("typed by hand" in p for p in report.check())
    # a cited file that does not exist
    (folder / "README.md").write_text(rendered + "\nSee `experiments/real_data/run.log`.\n")
    assert report.check() == ["experiments/real_data/README.md: cites "
                              "experiments/real_data/run.log, which does not exist"]


# --- shape of the docs ---------------------------------------------------------------------------

def test_readme_is_a_front_page():
    assert len(read("README.md").splitlines()) <= 200


def test_every_docs_page_is_in_the_nav():
    nav = set(re.findall(r"^\s*- [^:#\n]+: (\S+\.md)\s*$", read("mkdocs.yml"), re.M))
    pages = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "docs", "*.md"))}
    assert pages == nav
