"""The command line's contract with scripts and users, without a database (issue 14, defects
3, 5, 6 and 7): help always works, exit statuses mean one thing each, ``--json`` always prints
an object, library messages name settings in the words of the skin that shows them, and the
re-index device is judged the same by every skin.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest

from infra.settings import KEYS
from migration import cli, options
from migration.errors import ConfigError, PreflightError
from migration.providers import PROVIDER_VERSION, PROVIDERS
from migration.steps.reindex import ReindexSettings
from tests.providers.host import free_port

ROOT = Path(__file__).resolve().parents[2]
MASTER_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:rds!db-1-AbCdEf"
#: Modules that are skins (they speak their user's words) or development-only helpers run from
#: the CLI alone (``demo``: their flags are checked to exist below).
SKINS = {"cli/__init__.py", "providers.py"}
CLI_ONLY = {"dev/demo.py", "dev/local.py"}
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]*")


# --- defect 7: help whatever the environment; exit statuses; JSON on failure ------------------


def test_help_works_whatever_the_environment_holds(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("QCKSTRT_JOBS", "abc")
    monkeypatch.setenv("QCKSTRT_BATCH_SIZE", "lots")
    with pytest.raises(SystemExit) as info:
        cli.main(["verify", "--help"])
    assert info.value.code == 0
    assert "--schemas" in capsys.readouterr().out


def test_a_bad_environment_variable_is_a_usage_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("QCKSTRT_JOBS", "abc")
    assert cli.main(["import", "--json"]) == cli.EXIT_USAGE
    out = capsys.readouterr()
    error = json.loads(out.out)["error"]
    assert error == {
        "code": 2,
        "kind": "ConfigError",
        "setting": "jobs",
        "message": "QCKSTRT_JOBS: jobs 'abc' is not a whole number",
    }
    assert "Traceback" not in out.err


def test_a_step_that_fails_prints_a_json_error_and_exits_3(
    capsys: pytest.CaptureFixture[str],
) -> None:
    dead = f"postgresql://u:Secret-Pw-1@127.0.0.1:{free_port()}/db"
    argv = ["verify", "--json", "--attempts", "1", "--source", dead, "--target", dead]
    assert cli.main(argv) == cli.EXIT_FAILED
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert report["ok"] is False
    assert report["error"]["code"] == 3 and report["error"]["kind"] == "ConnectionFailed"
    assert "Secret-Pw-1" not in out.out + out.err


def test_a_usage_error_never_echoes_a_password(capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql://app:s3cret-pw@db.example:5432/app?password=other-pw"
    assert cli.main(["import", "--json", "--source-url", url]) == 2
    out, err = capsys.readouterr()
    assert "unrecognized arguments" in json.loads(out)["error"]["message"]
    assert "s3cret-pw" not in out + err and "other-pw" not in out + err
    assert "app:***@db.example" in err


def test_no_target_is_a_usage_error_with_a_json_object(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TARGET_DATABASE_URL", raising=False)
    assert cli.main(["extension", "--json"]) == cli.EXIT_USAGE
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["kind"] == "ConfigError" and "TARGET_DATABASE_URL" in error["message"]


def test_an_unexpected_crash_exits_4_and_says_where_the_traceback_is(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def crash(*_: Any, **__: Any) -> None:
        raise RuntimeError("boom with postgresql://u:Secret-Pw-2@h/db")

    monkeypatch.setattr("migration.steps.verify.verify", crash)
    url = "postgresql://u:Secret-Pw-2@127.0.0.1:1/db"
    assert cli.main(["verify", "--json", "--source", url, "--target", url]) == cli.EXIT_INTERNAL
    out = capsys.readouterr()
    error = json.loads(out.out)["error"]
    assert error["code"] == 4 and error["kind"] == "RuntimeError"
    assert "Secret-Pw-2" not in out.out + out.err
    path = re.search(r"traceback in (\S+)", out.err)
    assert path is not None
    assert "RuntimeError: boom" in Path(path.group(1).rstrip(");")).read_text()


# --- defect 6: run lists only what run takes -----------------------------------------------


def test_run_help_lists_no_flag_that_run_refuses(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    text = capsys.readouterr().out
    assert "--restart" not in text and "--dry-run" not in text
    assert "--pg-dump" in text and "--vector-schema" in text and "--table-schema" in text
    assert cli.main(["run", "--restart"]) == cli.EXIT_USAGE


# --- defect 3: one judgement of the device --------------------------------------------------

DEVICES_OK = ["cpu", "cuda", "cuda:0", "cuda:3", "mps", "auto"]
DEVICES_BAD = ["tpu", "gpu", "cuda:", "cuda:x", "CUDA", ""]


def _reindex_check(device: str) -> list[str]:
    news = {
        "provider_version": PROVIDER_VERSION,
        "host": "h",
        "port": 5432,
        "database": "d",
        "master_secret_arn": MASTER_ARN,
        "device": device,
    }
    return [f.property for f in PROVIDERS["Reindex"]().check({}, news).failures]


@pytest.mark.parametrize("device", DEVICES_OK)
def test_a_device_torch_accepts_passes_every_skin(device: str) -> None:
    from infra.settings import _validate_declared

    assert options.check("device", device) is None
    assert _reindex_check(device) == []
    _validate_declared({"device": device})
    assert ReindexSettings(device=device).device == device
    assert cli.build_parser().parse_args(["reindex", "--device", device]).device == device


@pytest.mark.parametrize("device", DEVICES_BAD)
def test_a_device_torch_refuses_fails_every_skin_in_the_same_words(device: str) -> None:
    from infra.settings import SettingsError, _validate_declared
    from migration.backends.embedder import resolve_device

    found = options.check("device", device)
    assert found is not None
    assert _reindex_check(device) == ["device"]
    with pytest.raises(SettingsError, match="reindexDevice"):
        _validate_declared({"device": device})
    with pytest.raises(ConfigError) as info:
        ReindexSettings(device=device)
    assert str(info.value) == str(found)
    with pytest.raises(ConfigError):
        resolve_device(device)


def test_a_gpu_that_is_not_there_is_a_preflight_error_not_a_bad_setting() -> None:
    torch = pytest.importorskip("torch")
    from migration.backends.embedder import resolve_device

    if torch.cuda.is_available():
        assert resolve_device("cuda:0") == "cuda:0"
        with pytest.raises(PreflightError, match="numbered from 0"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
    else:
        with pytest.raises(PreflightError, match="sees no GPU"):
            resolve_device("cuda:0")
        assert resolve_device("auto") in ("cpu", "mps")


# --- defect 5: library messages are neutral; every name a skin prints exists ----------------


def _library_messages() -> dict[str, list[str]]:
    """The text of every exception a library module raises, by module."""
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "migration").rglob("*.py")):
        module = path.relative_to(ROOT / "migration").as_posix()
        if module in SKINS:
            continue
        texts = []
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                parts = [
                    c.value
                    for arg in node.exc.args
                    for c in ast.walk(arg)
                    if isinstance(c, ast.Constant) and isinstance(c.value, str)
                ]
                texts.append(" ".join(parts))
        found[module] = texts
    return found


def _all_flags() -> set[str]:
    import argparse

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {f for p in sub.choices.values() for a in p._actions for f in a.option_strings}


def test_library_messages_name_no_flag_and_no_stack_key() -> None:
    keys = {k.name for k in KEYS}
    flags = _all_flags()
    for module, texts in _library_messages().items():
        for text in texts:
            named = set(FLAG.findall(text))
            if module in CLI_ONLY:
                assert named <= flags, (module, text)
            else:
                assert not named, (module, text)
            words = set(re.findall(r"[A-Za-z]+", text))
            assert not words & keys, (module, text)


def test_every_setting_a_message_names_exists_in_each_skin() -> None:
    flags = _all_flags()
    keys = {k.name for k in KEYS}
    inputs = {i for p in PROVIDERS.values() for i in p().DEFAULTS}
    texts = [t for ts in _library_messages().values() for t in ts]
    mentioned = options.mentions(texts)
    assert {"on_existing", "backup", "restart", "schemas", "index_name"} <= mentioned
    for name in mentioned:
        s = options.get(name)
        assert options.cli_name(s) in flags, name
        on_stack = options.pulumi_name(s)
        assert on_stack in keys | inputs or "(not a stack setting;" in on_stack, name


def test_a_step_report_prints_plain_lines_not_python_reprs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`extension`, `auth`, `storage` print their report as key: value lines; nested values read
    as JSON and lists of notes one per line (they used to print as Python's repr)."""
    from dataclasses import dataclass, field

    @dataclass
    class Report:
        notes: list[str] = field(default_factory=lambda: ["pgcrypto is not available", "x's"])
        check: dict[str, object] = field(default_factory=lambda: {"ok": True, "missing": []})
        objects: int = 3

    cli._render(Report())
    err = capsys.readouterr().err
    assert "notes: \n  - pgcrypto is not available\n  - x's\n" in err
    assert 'check: {"ok": true, "missing": []}' in err
    assert "objects: 3" in err
    assert "['" not in err and "{'" not in err
