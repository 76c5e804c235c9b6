"""Datasets: TFDS when prepared, else data that installed packages ship."""
from jaxthesis.data.sources import (
    DATASETS,
    SOURCES,
    DataDependencyError,
    DataFormatError,
    DataNotFoundError,
    DataSourceError,
    ImageSplit,
    load_dataset,
    load_mnist,
    resolve_source,
    tfds_is_prepared,
)
from jaxthesis.data.uci import TABULAR_DATASETS, TABULAR_LAYOUT, TabularSplits, load_tabular
