"""Print the README's config-key table from infra.settings.KEYS and the stack files.

Why generated: the table has a row per key with its per-stack values; writing it by hand drifts.
``tests/infra/test_settings.py`` checks that the README has a row for every key.
Run: ``.venv/bin/python scripts/render_config_table.py`` and paste over the README's table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from infra.settings import KEYS

ROOT = Path(__file__).resolve().parents[1]


def _show(value: Any) -> str:
    if value is None:
        return "(default)"
    if isinstance(value, dict) and "secure" in value:
        return "(secret)"
    if value == "" or value == []:
        return "—"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, list):
        return "`" + json.dumps(value) + "`"
    return f"`{value}`"


def main() -> None:
    stacks = {
        name: yaml.safe_load((ROOT / f"Pulumi.{name}.yaml").read_text())["config"]
        for name in ("staging", "prod")
    }
    print("| key | type | default | staging | prod | meaning |")
    print("|---|---|---|---|---|---|")
    region = {name: cfg.get("aws:region") for name, cfg in stacks.items()}
    print(
        f"| `aws:region` | string | — | {_show(region['staging'])} | {_show(region['prod'])} "
        "| AWS region of the stack. |"
    )
    for key in KEYS:
        per_stack = [_show(cfg.get(f"qckstrt:{key.name}")) for cfg in stacks.values()]
        desc = key.description.replace("|", "\\|")
        print(
            f"| `{key.name}` | {key.type} | {_show(key.default)} | {per_stack[0]} | "
            f"{per_stack[1]} | {desc} |"
        )


if __name__ == "__main__":
    main()
