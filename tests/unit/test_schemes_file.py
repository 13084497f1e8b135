"""Custom label schemes from a TOML file (`--schemes FILE`): parsed, validated, one clear
error line for each mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from watcher.cli.args import parse
from watcher.errors import UsageError
from watcher.labels import GITPOD_SCHEMES, match, schemes_from_toml

DEVPODS = """
[[scheme]]
name = "devpods"
require = { app = "devpod", "devpod/tier" = "*" }
instance_label = "devpod/id"
workspace_label = "devpod/workspace"
owner_label = "devpod/owner"
container = "main"
forbid = ["devpod/paused"]
"""


def test_a_scheme_from_toml() -> None:
    [scheme] = schemes_from_toml(DEVPODS)
    assert (scheme.name, scheme.container_name) == ("devpods", "main")
    labels = {"app": "devpod", "devpod/tier": "gold", "devpod/id": "dp-1",
              "devpod/workspace": "w-1", "devpod/owner": "me"}  # fmt: skip
    ident = match(labels, [scheme])
    assert ident is not None
    assert (ident.scheme, ident.instance_id, ident.workspace_id, ident.owner_id) == (
        "devpods", "dp-1", "w-1", "me"
    )  # fmt: skip
    assert match({**labels, "devpod/paused": "1"}, [scheme]) is None
    assert match({k: v for k, v in labels.items() if k != "devpod/tier"}, [scheme]) is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("scheme = [", "not TOML"),
        ("", "no [[scheme]]"),
        ('[other]\nx = 1', "unknown top-level keys"),
        ('[[scheme]]\nname = "x"', "instance_label must be a non-empty string"),
        ('[[scheme]]\ninstance_label = "i"', "name must be a non-empty string"),
        ('[[scheme]]\nname = "x"\ninstance_label = "i"\ncolour = "red"', "unknown keys"),
        ('[[scheme]]\nname = "x"\ninstance_label = "i"\nrequire = ["a"]', "require must be"),
        ('[[scheme]]\nname = "x"\ninstance_label = "i"\nrequire = { a = 1 }', "require must be"),
        ('[[scheme]]\nname = "x"\ninstance_label = "i"\nforbid = "a"', "forbid must be"),
        ('[[scheme]]\nname = "x"\ninstance_label = "i"\ncontainer = ""', "container must be"),
        ('[[scheme]]\nname = "x"\ninstance_label = "i"\n[[scheme]]\nname = "x"\n'
         'instance_label = "j"', "names must differ"),
        ('[[scheme]]\nname = "x"\ninstance_label = "i"\nrequire = { a = "1" }\nforbid = ["a"]',
         "both required and forbidden"),
    ],
)  # fmt: skip
def test_mistakes_are_usage_errors(text: str, says: str) -> None:
    with pytest.raises(UsageError, match=None) as err:
        schemes_from_toml(text, "s.toml")
    assert says in str(err.value)


def test_the_command_line_takes_a_file_first_and_gitpod_after(tmp_path: Path) -> None:
    path = tmp_path / "schemes.toml"
    path.write_text(DEVPODS)
    opts = parse(["ls", "--schemes", str(path)], {})
    assert [s.name for s in opts.schemes] == ["devpods", *(s.name for s in GITPOD_SCHEMES)]
    opts = parse(["watch", "--schemes", str(path), "--no-gitpod-schemes"], {})
    assert [s.name for s in opts.schemes] == ["devpods"]
    assert parse(["ls"], {}).schemes == GITPOD_SCHEMES


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["ls", "--schemes", "/no/such/file.toml"], "No such file"),
        (["ls", "--no-gitpod-schemes"], "needs --schemes FILE"),
        (["ls", "--schemes", "BAD"], "not TOML"),
    ],
)
def test_command_line_mistakes_exit_2_with_one_line(
    argv: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("scheme = [")
    argv = [str(bad) if a == "BAD" else a for a in argv]
    with pytest.raises(SystemExit) as exited:
        parse(argv, {})
    assert exited.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if not line.startswith(("usage:", " "))]
    assert len(errors) == 1 and says in errors[0], err
