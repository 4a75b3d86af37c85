"""The Postgres event log, with a pooled connection in every process that opens the instance.

dagster-postgres opens a new connection for each event it stores (``NullPool``), unless a
process calls ``optimize_for_webserver`` (the webserver does; the CLI does through
``backtest_assets.instance.prepare``). Run workers launched by the daemon, ``dagster job
execute`` and Celery workers do not, and pay a connection per event: about a thousand a
range run. Named in ``dagster.yaml`` as the event log storage, this class pools from the
start in each of them. Its pool is per process and opened on first use, after any fork.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster._serdes import ConfigurableClassData
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

from backtest_assets.deploy.settings import POOL


class PooledPostgresEventLogStorage(PostgresEventLogStorage):
    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None,
                          config_value: Mapping[str, Any]) -> PooledPostgresEventLogStorage:
        storage = cls(inst_data=inst_data, postgres_url=pg_url_from_config(config_value),
                      should_autocreate_tables=config_value.get("should_autocreate_tables",
                                                                True),
                      token_provider=get_token_provider_from_config(config_value))
        storage.optimize_for_webserver(**POOL)
        return storage
