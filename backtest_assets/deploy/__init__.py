"""Deployment helpers with no Dagster import: a local PostgreSQL cluster (the instance of real
work and the lake's catalog) and the Dagster instance's run-creation settings."""
