"""README.md and docs/*.md stay true to the code: every command's scripts, modules, paths and
--set keys exist, every Python entry answers --help, every relative link resolves, and the config
reference lists exactly the schema's keys with their type, default and range (tests/docs_commands.py
says what is checked and which paths are left out)."""
import functools

import pytest

import docs_commands as dc
from conftest import REPO

schemas = functools.lru_cache(maxsize=None)(dc.app_schema)


@pytest.fixture(scope="module")
def commands():
    found = [cmd for path in dc.doc_files() for cmd in dc.commands_in(path.relative_to(REPO))]
    assert len(found) > 40  # the collector reads the pages' blocks at all
    return found


def test_every_command_names_existing_scripts_modules_paths_and_valid_set_keys(commands):
    roots = dc.source_roots()
    problems = [p for cmd in commands for p in dc.command_problems(cmd, roots, schemas)]
    assert problems == []


def test_every_python_entry_answers_help(commands):
    entries = dc.help_entries(commands)
    assert {"cosmoflow/train.py", "deepcam/train.py", "edsr/train.py", "scripts/benchmark.py",
            "-m cosmoflow.make_data"} <= set(entries)
    results = dc.run_help(entries)
    assert {entry: code for entry, code in results.items() if code != 0} == {}
    assert set(results) == set(entries)


def test_every_relative_link_resolves():
    problems = [p for path in dc.doc_files() for p in dc.link_problems(path.relative_to(REPO))]
    assert problems == []


def test_the_config_reference_matches_every_apps_schema():
    text = dc.REFERENCE.read_text()
    assert dc.reference_problems(text, {app: schemas(app) for app in dc.APPS}) == []
    documented = dc.parse_reference(text)
    for app in dc.APPS:  # every schema key is on the page, once: shared or in the app's section
        keys = set(documented[dc.EVERY_APP]) | set(documented[app])
        assert keys == set(dc.schema_rows(schemas(app)))


def test_the_readme_keeps_the_two_commands():
    blocks = [body for _, body, _ in dc.fenced_blocks((REPO / "README.md").read_text())]
    assert any(body[0].startswith("bash scripts/demo.sh ") and
               body[1].startswith("bash scripts/test.sh ") for body in blocks)


# --- the checks can fail ------------------------------------------------------------------------

BROKEN = """# Broken page

```bash
python scripts/no_such_script.py --flag
mpiexec -n 2 python -m cosmoflow.no_such_tool --out data/x
DRY_RUN=1 APP=deepcam bash scripts/launch/no_such.sbatch
python cosmoflow/train.py --config cosmoflow/configs/demo.yaml --set train.no_such_key=1 \\
    --set train.local_batch=0 --output-dir runs/fine
srun -n 4 --gpus-per-task=1 python edsr/train.py --config edsr/configs/missing.yaml
python scripts/benchmark.py --app deepcam --set model.middle_blocks=two
sbatch scripts/launch/missing.sbatch
```

```console
$ python -m deepcam.no_such_tool --help
usage: python scripts/output_lines_are_not_commands.py
```

See [the setup](no_such_page.md), [a heading](configuration.md#no-such-heading) and
[this one](#broken-page), `[code](is_not_a_link.md)` and [a link split over
two lines](reliability.md#nowhere).
"""


def test_a_broken_page_is_reported_with_file_and_line():
    commands = dc.commands_in("docs/broken.md", BROKEN)
    problems = [p for cmd in commands for p in dc.command_problems(cmd, dc.source_roots(), schemas)]
    expected = [("docs/broken.md:4: script scripts/no_such_script.py does not exist"),
                ("docs/broken.md:5: module cosmoflow.no_such_tool not found"),
                ("docs/broken.md:6: script scripts/launch/no_such.sbatch does not exist"),
                ("docs/broken.md:7: --set train.no_such_key=1: unknown config key "
                 "'train.no_such_key'"),
                ("docs/broken.md:7: --set train.local_batch=0: config key 'train.local_batch': "
                 "0 is out of range"),
                ("docs/broken.md:9: path edsr/configs/missing.yaml does not exist"),
                ("docs/broken.md:10: --set model.middle_blocks=two: config key "
                 "'model.middle_blocks' expects int"),
                ("docs/broken.md:11: script scripts/launch/missing.sbatch does not exist"),
                ("docs/broken.md:15: module deepcam.no_such_tool not found")]
    for message in expected:
        assert [p for p in problems if p.startswith(message)], (message, problems)
    assert len(problems) == len(expected)

    links = dc.link_problems("docs/broken.md", BROKEN)
    assert links == ["docs/broken.md:19: link no_such_page.md leads nowhere",
                     "docs/broken.md:19: link configuration.md#no-such-heading: "
                     "no heading #no-such-heading",
                     "docs/broken.md:20: link reliability.md#nowhere: no heading #nowhere"]


def test_a_failing_entry_is_reported_by_the_help_runner():
    results = dc.run_help(["scripts/no_such_script.py"])
    assert results["scripts/no_such_script.py"] != 0


def test_a_reference_out_of_step_with_the_schema_is_reported():
    all_schemas = {app: schemas(app) for app in dc.APPS}
    lines = dc.REFERENCE.read_text().splitlines()
    row = {line.split("`")[1]: i for i, line in enumerate(lines) if line.startswith("| `")}
    lines[row["train.epochs"]] = lines[row["train.epochs"]].replace("`10`", "`12`")
    lines[row["train.momentum"]] = lines[row["train.momentum"]].replace(">= 0 and <= 1", ">= 0")
    lines[row["log.progress"]] = "| `log.progress` | bool | `true` | - |  |"
    lines[row["model.res_scale"]] += "\n| `model.no_such_key` | int | `1` | - | made up |"
    del lines[row["data.eval_batch"]]
    problems = dc.reference_problems("\n".join(lines), all_schemas, name="ref.md")
    wanted = [f"ref.md:{row['train.epochs'] + 1}: train.epochs: default is '`12`', "
              "the schema says '`10`'",
              f"ref.md:{row['train.momentum'] + 1}: train.momentum: range or choices is '>= 0'",
              f"ref.md:{row['log.progress'] + 1}: log.progress has no meaning written",
              "model.no_such_key is not a key of section 'edsr'",
              "ref.md: section 'edsr' lacks key data.eval_batch"]
    for message in wanted:
        assert [p for p in problems if message in p], (message, problems)
    assert len(problems) == len(wanted)
