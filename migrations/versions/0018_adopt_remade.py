"""``influxdb_adopt = 'remade'``: a provisioned tenant's database deleted and made again

The reconciler sends such a tenant back to provisioning with this value (it used
``'unmarked'``, the value of rows from before the worker). The run takes an unmarked
database of the tenant's name on its own server, as for ``'unmarked'``; but a row whose
server is released meanwhile (a 422 there, a failure that frees the slot) clears it and is
placed as new, instead of being located on every server like a row from before the worker.
Rows carrying ``'unmarked'`` keep it.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAME = "ck_tenants_influxdb_adopt"


def _check(*values: str) -> str:
    return (
        "influxdb_adopt IS NULL OR influxdb_adopt IN (" + ", ".join(f"'{v}'" for v in values) + ")"
    )


def upgrade() -> None:
    op.drop_constraint(_NAME, "tenants", type_="check")
    op.create_check_constraint(_NAME, "tenants", _check("unmarked", "any", "remade"))


def downgrade() -> None:
    # 0017's code knows no 'remade': the same run under its old name.
    op.execute("UPDATE tenants SET influxdb_adopt = 'unmarked' WHERE influxdb_adopt = 'remade'")
    op.drop_constraint(_NAME, "tenants", type_="check")
    op.create_check_constraint(_NAME, "tenants", _check("unmarked", "any"))
