"""Stages: plain functions, one module per verb, that read through `catalog`, call `transforms` and
write through `catalog`. No Prefect, Dask, typer or rich: a test calls a stage directly, a Prefect
task wraps it (flows/<verb>.py) and a Dask shard calls the same function (flows/executors.py)."""
