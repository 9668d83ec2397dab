# One image for every role: speed layer, Spark driver/executors (spark-submit), Airflow, REST API.
# Layered so that a code change rebuilds only the last layers: dependencies come from the lock first.
FROM python:3.11-slim-bookworm

ARG DELTA_SPARK_JARS=""   # e.g. "io.delta:delta-spark_2.13:4.0.0" where the build can reach Maven Central
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64 \
    LAMBDAFLOW_CONF=/opt/lambdaflow/conf \
    LAMBDAFLOW_PROFILE=cluster

RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps curl tini \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/lambdaflow
COPY constraints.txt setup.py ./
# Dependencies only (a stub package), so this layer survives code changes.
RUN mkdir -p lambdaflow && touch lambdaflow/__init__.py \
 && pip install -c constraints.txt . \
 && pip uninstall -y lambdaflow && rm -rf lambdaflow build *.egg-info \
 && if [ -n "$DELTA_SPARK_JARS" ]; then \
      python -c "from pyspark.sql import SparkSession as S; S.builder.config('spark.jars.packages', '$DELTA_SPARK_JARS').getOrCreate().stop()"; \
    fi

COPY lambdaflow ./lambdaflow
COPY batch_layer ./batch_layer
COPY speed_layer ./speed_layer
COPY serving_layer ./serving_layer
COPY dags ./dags
COPY conf ./conf
RUN pip install --no-deps -c constraints.txt . \
 && useradd --create-home --uid 10001 lambdaflow
USER lambdaflow

HEALTHCHECK --interval=30s --timeout=10s --retries=3 CMD lambdaflow config check > /dev/null || exit 1
ENTRYPOINT ["tini", "--", "lambdaflow"]
CMD ["--help"]
