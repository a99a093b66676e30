"""Migrations are expand-only (docs/app.md, "Migrations"): during a rolling update the hosts not
yet updated run the previous release on the migrated schema, so a migration's upgrade() must not
drop or rename a table or column, nor narrow a column the previous release writes. A migration
that must (a contract step, shipped once no release in service uses what it removes) says so
with a module-level ``CONTRACT = "<why the previous release no longer needs it>"``.

What this proves: no upgrade() calls Alembic's dropping or renaming operations, or runs SQL with
DROP or RENAME in it, unless marked. What it does not: that an added NOT NULL column without a
default, or a changed meaning of a column, is tolerated by the old code (review catches those).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from grimbots.migrations_runner import MIGRATIONS_DIR

VERSIONS = sorted((MIGRATIONS_DIR / "versions").glob("*.py"))
CONTRACTING_OPS = {"drop_column", "drop_table", "rename_table", "drop_constraint"}
CONTRACTING_SQL = re.compile(r"\b(DROP|RENAME)\b", re.IGNORECASE)


def contracting_steps(source: str) -> list[str]:
    """What upgrade() does that the previous release may not tolerate, with line numbers;
    [] when the module is marked CONTRACT."""
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "CONTRACT" for t in node.targets
        ):
            return []
    upgrade = next(
        (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "upgrade"), None
    )
    found = []
    for node in ast.walk(upgrade) if upgrade else ():
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name = node.func.attr
            if name in CONTRACTING_OPS:
                found.append(f"line {node.lineno}: {name}")
            if name == "alter_column" and any(k.arg == "new_column_name" for k in node.keywords):
                found.append(f"line {node.lineno}: alter_column(new_column_name=...)")
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and CONTRACTING_SQL.search(node.value)
        ):
            found.append(f"line {node.lineno}: SQL {node.value.strip()[:60]!r}")
    return found


@pytest.mark.parametrize("path", VERSIONS, ids=lambda p: p.name)
def test_each_migration_is_expand_only_unless_marked_contract(path: Path):
    found = contracting_steps(path.read_text())
    assert not found, (
        f"{path.name}'s upgrade() contracts the schema the previous release runs on: {found}; "
        "split it (expand now, contract once no release in service needs it) or mark it CONTRACT"
    )


EXPAND = """
def upgrade():
    op.add_column("leads", sa.Column("nickname", sa.String(64), nullable=True))

def downgrade():
    op.drop_column("leads", "nickname")
"""


@pytest.mark.parametrize(
    "body",
    [
        'op.drop_column("leads", "nickname")',
        'op.alter_column("leads", "name", new_column_name="full_name")',
        'op.rename_table("leads", "contacts")',
        'op.execute("ALTER TABLE leads DROP COLUMN nickname")',
        'with op.batch_alter_table("leads") as b:\n        b.drop_column("nickname")',
    ],
)
def test_the_check_finds_a_drop_or_rename_and_accepts_a_marked_contract(body):
    source = f"def upgrade():\n    {body}\n"
    assert contracting_steps(source), body
    assert contracting_steps(f'CONTRACT = "nothing in service reads it"\n{source}') == []
    assert contracting_steps(EXPAND) == []  # a drop in downgrade() is no contract
