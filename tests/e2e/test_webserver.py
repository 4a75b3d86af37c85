"""The real dagster-webserver on 127.0.0.1 loads the code location and serves its assets."""

import pytest

from tests.support.dagster_servers import DagsterServers
from tests.unit.test_definitions import ASSETS, DATE_SYMBOL_ASSETS

QUERY = """{
  workspaceOrError { ... on Workspace { locationEntries { name
    locationOrLoadError { __typename ... on PythonError { message } } } } }
  assetNodes { assetKey { path } partitionKeysByDimension { name }
               assetChecksOrError { ... on AssetChecks { checks { name blocking } } } }
}"""


@pytest.fixture
def webserver(tmp_path):
    """The webserver alone over a fresh instance, stopped by its process group."""
    with DagsterServers(tmp_path) as servers:
        servers.start_webserver()
        yield servers


def test_webserver_serves_the_asset_graph(webserver):
    data = webserver.gql(QUERY)
    (entry,) = data["workspaceOrError"]["locationEntries"]
    assert entry["name"] == "backtest_assets"
    assert entry["locationOrLoadError"]["__typename"] == "RepositoryLocation", entry
    nodes = {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}
    assert sorted(nodes) == ASSETS
    for name in DATE_SYMBOL_ASSETS:
        node = nodes[name]
        assert [d["name"] for d in node["partitionKeysByDimension"]] == ["date", "symbol"], name
        checks = {c["name"]: c["blocking"] for c in node["assetChecksOrError"]["checks"]}
        assert checks["schema"] is True and checks["unique_keys"] is True, name
        assert checks["complete_days"] is False, name
