import sys

from backtest_assets.cli import main

sys.exit(main())
