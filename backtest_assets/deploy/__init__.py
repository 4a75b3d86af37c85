"""Deployment helpers with no Dagster import: a local PostgreSQL cluster (for the instance of
real work) and the Dagster instance's run-creation settings."""
