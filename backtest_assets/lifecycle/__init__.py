"""The lifecycle beyond the backtest (pure; no Dagster): the demo stage's forward test
(:mod:`.demo`) and the run-epoch records (:mod:`.epochs`)."""
