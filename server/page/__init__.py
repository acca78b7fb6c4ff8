"""The live page at ``/``: static assets shipped in this package, served by tally itself."""

from server.page.assets import ASSETS as ASSETS
from server.page.assets import Asset as Asset
from server.page.assets import PageAssets as PageAssets

__all__ = ["ASSETS", "Asset", "PageAssets"]
