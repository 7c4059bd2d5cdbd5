"""What the data is: schemas, the product catalogue, and where every table lives."""

from catalog.config import Catalog, CatalogError, load_catalog
from catalog.lake import Lake, connect

__all__ = ["Catalog", "CatalogError", "Lake", "connect", "load_catalog"]
