"""What the data is: schemas, the product catalogue, and where every table lives."""

from catalog.config import Catalog, CatalogError
from catalog.lake import Lake, connect
from catalog.load import load_catalog

__all__ = ["Catalog", "CatalogError", "Lake", "connect", "load_catalog"]
