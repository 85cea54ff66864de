# The virtualpod operator image: `virtualpod run` (Kopf) + libvirt-python, and the
# `testing` extra (the emulated Kubernetes API) so that `virtualpod demo` runs too.
# libvirt-python compiles against the libvirt headers, so wheels are built in a
# separate stage and only the libvirt client library goes into the final image.
FROM python:3.11-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev pkg-config libvirt-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# README.md* : the readme is part of the package metadata when present.
COPY pyproject.toml README.md* ./
COPY operator/ operator/
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[testing]"

FROM python:3.11-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libvirt0 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "virtualpod[testing]" \
 && rm -rf /wheels
# `virtualpod demo` reads its VirtualPods from manifests/demo of the working directory.
WORKDIR /opt/virtualpod
COPY manifests/demo/ manifests/demo/
ENV PYTHONUNBUFFERED=1
EXPOSE 8080
ENTRYPOINT ["virtualpod"]
CMD ["run", "--config", "/etc/virtualpod/settings.yaml", "--standalone", "--liveness", "http://0.0.0.0:8080/healthz"]
