"""Checks that keep README.md and docs/*.md true to the code, and writes the config reference.

Every fenced ```bash / ```sh / ```console block is read as commands (continuation lines joined,
`#` comments dropped, `$ ` prompts of console blocks honoured, `&&`/`;`/`|` split). For each:
- environment assignments (`DRY_RUN=1`) and launcher prefixes (`mpiexec -n 2`, `srun ...`,
  `sbatch`, `horovodrun -np 4`, `jsrun ...`) are skipped to reach the program;
- `python -m X`: X is a module of this repository (its file exists) or an installed one;
  `python path.py`, `bash path`: the script exists;
- a repository path named anywhere in the command exists. The rule: a word (or the value of
  `--flag=value`, `NAME=value`) is a repository path when its first component is a top-level folder
  (common/, scripts/, docs/, ...). Words under runs/ or data/ (what commands create: outputs,
  datasets, data roots), absolute paths and words holding `$` are the user's own and not checked;
- each `--set KEY=VALUE` is a key of the app's schema (the app from the script's folder, `--app`
  or a positional app name) and VALUE passes that key's check, on top of the command's `--config`;
- each Python entry of the repository answers `--help` with exit code 0 (run_help: all of them in
  one process, so TensorFlow loads once).
Programs of other packages (tensorboard, lscpu, ...) are reported by `unchecked`, not checked.

Relative Markdown links must resolve, `#anchor` included (GitHub's heading slugs).

    python tests/docs_commands.py --write-config-reference   # after changing a config key
"""
import argparse
import contextlib
import importlib
import importlib.util
import io
import json
import os
import re
import runpy
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
APPS = tuple(sorted(p.parent.name for p in REPO.glob("*/train.py")))  # as the suite finds apps
SHELLS = ("bash", "sh", "console")
LAUNCHERS = ("mpiexec", "mpirun", "srun", "sbatch", "horovodrun", "jsrun", "bsub")
SCRIPT_SUFFIXES = (".py", ".sh", ".sbatch", ".lsf")
CREATED_ROOTS = ("runs", "data")  # outputs and data folders: what commands create
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")  # text may span lines
REFERENCE = REPO / "docs" / "config-reference.md"


@dataclass
class Command:
    file: str
    line: int
    words: list
    program: str = ""      # "python", "bash" or an outside program
    script: str = ""       # repository path of a script
    module: str = ""       # python -m module
    args: list = field(default_factory=list)

    def where(self):
        return f"{self.file}:{self.line}"

    def text(self):
        return " ".join(self.words)


def doc_files():
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def fenced_blocks(text):
    """(line number of the first body line, [lines], language) of each fenced block."""
    lines, blocks, i = text.splitlines(), [], 0
    while i < len(lines):
        match = re.match(r"^(\s*)```(\S*)", lines[i])
        if not match:
            i += 1
            continue
        indent, language, first, body = len(match.group(1)), match.group(2), i + 2, []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith("```"):
            body.append(lines[i][indent:] if lines[i][:indent].isspace() else lines[i].lstrip())
            i += 1
        blocks.append((first, body, language))
        i += 1
    return blocks


def commands_in(path, text=None):
    """Every command of the shell blocks of one Markdown file."""
    text = (REPO / path).read_text() if text is None else text
    found = []
    for first, body, language in fenced_blocks(text):
        if language not in SHELLS:
            continue
        j = 0
        while j < len(body):
            start, line = j, body[j]
            while line.rstrip().endswith("\\") and j + 1 < len(body):
                j += 1
                line = line.rstrip()[:-1] + " " + body[j]
            j += 1
            if language == "console":
                if not line.lstrip().startswith("$ "):
                    continue
                line = line.lstrip()[2:]
            for words in split_commands(shlex.split(line, comments=True)):
                found.append(parse(Command(str(path), first + start, words)))
    return found


def split_commands(words):
    part, parts = [], []
    for word in words:
        if word in ("&&", "||", ";", "|"):
            parts.append(part)
            part = []
        else:
            part.append(word)
    return [p for p in parts + [part] if p]


def parse(cmd):
    """Find the program, script or module of a command behind assignments and launchers."""
    words = [w for w in cmd.words]
    while words and ENV_ASSIGNMENT.match(words[0]):
        words.pop(0)
    if words and words[0] in LAUNCHERS:
        words.pop(0)
        while words and not (is_python(words[0]) or words[0] in ("bash", "sh")
                             or words[0].endswith(SCRIPT_SUFFIXES)):
            words.pop(0)
    if not words:
        return cmd
    cmd.program = "python" if is_python(words[0]) else words[0]
    rest = words[1:]
    if cmd.program == "python" and rest[:1] == ["-m"] and len(rest) > 1:
        cmd.module, cmd.args = rest[1], rest[2:]
    elif cmd.program in ("python", "bash", "sh") and rest:
        cmd.script, cmd.args = rest[0], rest[1:]
    elif words[0].endswith(SCRIPT_SUFFIXES):
        cmd.program, cmd.script, cmd.args = "bash", words[0], rest
    else:
        cmd.args = rest
    return cmd


def is_python(word):
    return re.fullmatch(r"(\S*/)?python3?(\.\d+)?", word) is not None


def repo_module_file(module):
    base = REPO.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__main__.py"):
        if candidate.is_file():
            return candidate
    return None


def source_roots():
    """The repository's top-level source folders (hidden ones and created ones left out)."""
    return {p.name for p in REPO.iterdir()
            if p.is_dir() and not p.name.startswith(".") and p.name not in CREATED_ROOTS}


def named_paths(cmd, roots):
    """Repository paths a command names (see the module docstring for the rule)."""
    paths = []
    for word in cmd.words:
        assigned = word.startswith("--") and "=" in word or ENV_ASSIGNMENT.match(word)
        value = word.split("=", 1)[1] if assigned else word
        if "$" in value or value.startswith("/") or "/" not in value or value == cmd.script:
            continue
        if value.split("/")[0] in roots:
            paths.append(value)
    return paths


def command_problems(cmd, roots, schemas):
    """Problems of one command, each 'file:line: message'."""
    problems = []
    if cmd.module:
        if cmd.module.split(".")[0] in roots:
            if repo_module_file(cmd.module) is None:
                problems.append(f"module {cmd.module} not found in the repository")
        elif importlib.util.find_spec(cmd.module.split(".")[0]) is None:
            problems.append(f"module {cmd.module} is not installed")
    if cmd.script and not (REPO / cmd.script).is_file():
        problems.append(f"script {cmd.script} does not exist")
    for path in named_paths(cmd, roots):
        if not (REPO / path).exists():
            problems.append(f"path {path} does not exist")
    problems += set_problems(cmd, schemas)
    return [f"{cmd.where()}: {p} (in: {cmd.text()})" for p in problems]


def command_app(cmd):
    entry = cmd.script or (cmd.module or "").replace(".", "/")
    if entry.split("/")[0] in APPS:
        return entry.split("/")[0]
    args = cmd.args
    for i, word in enumerate(args):
        if word == "--app" and i + 1 < len(args):
            return args[i + 1]
        if word.startswith("--app="):
            return word.split("=", 1)[1]
    return next((w for w in args if w in APPS), None)


def option_values(args, name):
    values = []
    for i, word in enumerate(args):
        if word == name and i + 1 < len(args):
            values.append(args[i + 1])
        elif word.startswith(name + "="):
            values.append(word.split("=", 1)[1])
    return values


def set_problems(cmd, schemas):
    """Each --set KEY=VALUE checked against the app's schema on top of the command's --config."""
    from common.config import ConfigError, apply_override, default_config, resolve
    assignments = option_values(cmd.args, "--set")
    if not assignments:
        return []
    app = command_app(cmd)
    if app not in APPS:
        return [f"--set without a known app ({app!r})"]
    schema = schemas(app)
    configs = option_values(cmd.args, "--config")
    try:
        cfg = resolve(schema, str(REPO / configs[0])) if configs else default_config(schema)
    except ConfigError as err:
        return [f"--config: {err}"]
    problems = []
    for text in assignments:
        key, _, raw = text.partition("=")
        parts = key.split(".")
        if parts[0] == "stages" and len(parts) > 1 and parts[1].isdigit():
            while len(cfg["stages"]) <= int(parts[1]):
                cfg["stages"].append({})
        try:
            apply_override(cfg, schema, key, yaml.safe_load(raw) if raw.strip() else None)
        except ConfigError as err:
            problems.append(f"--set {text}: {err}")
    return problems


def app_schema(app):
    """The schema the app's train.py runs with (common/launch.py merges the same parts)."""
    from common.config import COMMON_DEFAULTS, merge_defaults
    return merge_defaults(COMMON_DEFAULTS, importlib.import_module(f"{app}.train").DEFAULTS)


def help_entries(commands):
    """Distinct repository Python entries: script paths and modules."""
    entries = set()
    for cmd in commands:
        if cmd.program == "python" and cmd.script.endswith(".py"):
            entries.add(cmd.script)
        elif cmd.module and repo_module_file(cmd.module) is not None:
            entries.add("-m " + cmd.module)
    return sorted(entries)


def run_help(entries, timeout=240):
    """{entry: exit code or error} of `--help` for every entry, in one child process."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, str(Path(__file__)), "--run-help", *entries],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    lines = [l for l in result.stdout.splitlines() if l.startswith("HELP-RESULTS ")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"--help runner failed ({result.returncode}): {result.stderr[-3000:]}")
    return json.loads(lines[-1][len("HELP-RESULTS "):])


def _answer_help(entries):
    """Child side of run_help: run each entry as __main__ with argv [entry, --help]."""
    results, quiet = {}, io.StringIO()
    for entry in entries:
        sys.argv = [entry, "--help"]
        saved_path = list(sys.path)
        try:
            with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
                if entry.startswith("-m "):
                    runpy.run_module(entry[3:], run_name="__main__", alter_sys=True)
                else:
                    sys.path.insert(0, str((REPO / entry).parent))
                    runpy.run_path(str(REPO / entry), run_name="__main__")
            results[entry] = "returned without exiting"
        except SystemExit as done:
            results[entry] = done.code or 0
        except BaseException as err:  # noqa: BLE001 - reported per entry
            results[entry] = f"{type(err).__name__}: {err}"
        finally:
            sys.path[:] = saved_path
    print("HELP-RESULTS " + json.dumps(results))


def link_problems(path, text=None):
    """Relative links (and #anchors) of one Markdown file that do not resolve."""
    path = REPO / path
    text = path.read_text() if text is None else text
    prose = prose_only(text)
    problems = []
    for match in LINK.finditer(prose):
        target = match.group(1)
        if re.match(r"^[a-z]+:", target):
            continue  # http(s), mailto: not checked offline
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve()
        where = f"{path.relative_to(REPO)}:{prose.count(chr(10), 0, match.start()) + 1}"
        if file_part and not dest.exists():
            problems.append(f"{where}: link {target} leads nowhere")
        elif anchor and (not file_part or dest.suffix == ".md") and anchor not in anchors(
                dest.read_text() if file_part else text):
            problems.append(f"{where}: link {target}: no heading #{anchor}")
    return problems


def prose_only(text):
    """The text with code blocks and code spans blanked, line breaks kept."""
    lines, in_code = text.split("\n"), False
    for i, line in enumerate(lines):
        fence = line.strip().startswith("```")
        if fence or in_code:
            lines[i] = ""
        in_code ^= fence
    return re.sub(r"`[^`]*`", lambda m: "\n" * m.group(0).count("\n"), "\n".join(lines))


def anchors(text):
    """GitHub's heading slugs: lower case, punctuation dropped, spaces to '-', repeats numbered."""
    seen, slugs, in_code = {}, set(), False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            in_code = not in_code
        heading = None if in_code else re.match(r"^#{1,6} +(.+?) *$", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).replace("`", "").lower())
            slug = slug.replace(" ", "-")
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            slugs.add(slug if count == 0 else f"{slug}-{count}")
    return slugs


def unchecked(commands):
    """Commands whose program is outside this repository: (where, text, reason)."""
    out = []
    for cmd in commands:
        if cmd.program not in ("python", "bash", "sh"):
            out.append((cmd.where(), cmd.text(), f"{cmd.program or '?'} is another package's "
                        "program: only its repository paths and --set keys are checked"))
        elif cmd.module and repo_module_file(cmd.module) is None:
            out.append((cmd.where(), cmd.text(), f"{cmd.module} is an installed package: "
                        "checked importable, not run with --help"))
        elif cmd.program in ("bash", "sh"):
            out.append((cmd.where(), cmd.text(), "shell script: checked to exist, not run"))
    return out


# --- the configuration reference -----------------------------------------------------------------

COLUMNS = ("key", "type", "default", "range or choices", "meaning")
EVERY_APP = "Every app"


def schema_rows(schema, prefix=""):
    """{dotted key: (type, default, range)} of every leaf of a schema, as the page shows them."""
    rows = {}
    for name, spec in schema.items():
        key = prefix + name
        if isinstance(spec, dict):
            rows.update(schema_rows(spec, key + "."))
        else:
            rows[key] = describe(key, spec)
    return rows


def describe(key, spec):
    from common.config import Choice, Range
    if isinstance(spec, Choice):
        choices = ", ".join(f"`{shown(o)}`" for o in spec.options)
        return type(spec.options[0]).__name__, f"`{shown(spec.options[0])}`", f"one of {choices}"
    if isinstance(spec, Range):
        listed = spec.kind is list or isinstance(spec.default, list)
        kind = "list of numbers" if listed else spec.kind.__name__
        kind += " or null" if spec.default is None else ""
        bounds = ("each " if listed and spec.describe() else "") + spec.describe()
        bounds += ", strictly increasing" if spec.increasing else ""
        return kind, f"`{shown(spec.default)}`", bounds or "-"
    kind = "list of stages" if key == "stages" else type(spec).__name__
    return kind, f"`{shown(spec)}`", "-"


def shown(value):
    return value if isinstance(value, str) and value else json.dumps(value)


def expected_sections(schemas):
    """{section: {key: (type, default, range)}}: keys alike in every app once, the rest per app."""
    rows = {app: schema_rows(schema) for app, schema in schemas.items()}
    first = next(iter(rows.values()))
    common = {k: v for k, v in first.items() if all(r.get(k) == v for r in rows.values())}
    sections = {EVERY_APP: common}
    for app, app_rows in rows.items():
        sections[app] = {k: v for k, v in app_rows.items() if k not in common}
    return sections


def parse_reference(text):
    """{section: {key: (type, default, range, meaning, line)}} of the reference page."""
    sections, section = {}, None
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("## "):
            section = line[3:].strip()
            sections[section] = {}
        elif section and line.startswith("| `"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) != len(COLUMNS):
                cells = (cells + [""] * len(COLUMNS))[:len(COLUMNS)]
            key = cells[0].strip("`")
            if key in sections[section]:
                key += " (again)"
            sections[section][key] = (*cells[1:], number)
    return sections


def reference_problems(text, schemas, name="docs/config-reference.md"):
    """Where the page and the schema disagree: keys missing or extra, columns, empty meanings."""
    page, problems = parse_reference(text), []
    for section, keys in expected_sections(schemas).items():
        documented = page.get(section, {})
        for key, columns in keys.items():
            if key not in documented:
                problems.append(f"{name}: section '{section}' lacks key {key}")
                continue
            *shown_columns, meaning, number = documented[key]
            for column, want, have in zip(COLUMNS[1:], columns, shown_columns):
                if want != have:
                    problems.append(f"{name}:{number}: {key}: {column} is {have!r}, "
                                    f"the schema says {want!r}")
            if not meaning:
                problems.append(f"{name}:{number}: {key} has no meaning written")
        for key in documented.keys() - keys.keys():
            problems.append(f"{name}:{documented[key][-1]}: {key} is not a key of section "
                            f"'{section}' in the schema")
    for section in page.keys() - expected_sections(schemas).keys():
        problems.append(f"{name}: unknown section '{section}'")
    return problems


def write_reference(path, schemas):
    """Write the page from the schema, keeping each key's meaning from the page as it is."""
    old = parse_reference(path.read_text()) if path.exists() else {}
    meanings = {key: row[3] for rows in old.values() for key, row in rows.items() if row[3]}
    out = [REFERENCE_HEAD]
    for section, keys in expected_sections(schemas).items():
        out += [f"## {section}", "", SECTION_NOTES.get(section, f"Keys of `{section}/train.py`'s "
                "`DEFAULTS` (and app defaults of common keys)."), "",
                "| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
        for key, columns in keys.items():
            out.append(f"| `{key}` | " + " | ".join(columns) + f" | {meanings.get(key, '')} |")
        out.append("")
    path.write_text("\n".join(out))


REFERENCE_HEAD = """# Configuration reference

Every key of every app's config schema (`common/config.py`: `COMMON_DEFAULTS` merged with each
app's `DEFAULTS` in `<app>/train.py`), with its type, default, accepted range or choices and
meaning. A stage (`stages: [...]`) may override keys of `data`, `model` and `train`. How the keys
work together: [configuration.md](configuration.md).

The type, default and range columns are written from the schema by
`python tests/docs_commands.py --write-config-reference`, which keeps the meanings;
`tests/test_docs.py` fails when a key is missing here, listed but not in the schema, shown with
another type, default or range, or has no meaning.
"""

SECTION_NOTES = {EVERY_APP: "Keys with the same type, default and range in every app."}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-config-reference", action="store_true",
                        help=f"regenerate {REFERENCE.relative_to(REPO)} from the schema, "
                             "keeping the meanings written there")
    parser.add_argument("--run-help", nargs="+", metavar="ENTRY", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_help:
        _answer_help(args.run_help)
    elif args.write_config_reference:
        write_reference(REFERENCE, {app: app_schema(app) for app in APPS})
        print(f"wrote {REFERENCE.relative_to(REPO)}")
    else:
        parser.print_help()


if __name__ == "__main__":
    main()
