"""Market-data sources: the Binance archive and REST clients, and the synthetic generator."""
