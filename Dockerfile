# engine-init: the first-boot job that makes TensorRT engines ready on a Jetson.
#
# Bases (they carry TensorRT's Python bindings and builder), each with its pinned packages in
# docker/constraints/<CONSTRAINTS>.txt:
#   JetPack 6.1 / 6.2 (TensorRT 10.3, CUDA 12.6):  nvcr.io/nvidia/l4t-tensorrt:r10.3.0-devel
#                                                  CONSTRAINTS=l4t-tensorrt-r10.3.0  (default)
#   JetPack 6.0       (TensorRT 8.6.2, CUDA 12.2): nvcr.io/nvidia/l4t-tensorrt:r8.6.2-devel
#                                                  CONSTRAINTS=l4t-tensorrt-r8.6.2
#   x86 dGPU          (TensorRT 10.3, CUDA 12.6):  nvcr.io/nvidia/tensorrt:24.08-py3
#                                                  CONSTRAINTS=tensorrt-24.08-py3
# Not supported: JetPack 5.1 (l4t-tensorrt:r8.5.2.2). Its TensorRT bindings exist only for
# Python 3.8 and engine-init needs Python >= 3.10; the build stops saying so.
# CI builds it on a locally made Debian base that reproduces these bases' traps
# (tests/container/images.py): CONSTRAINTS=ci-debian-bookworm, EXTRAS=onnxruntime,fleet,
# PIP_NO_INDEX=1. The fleet extra (cryptography, oras) is what export, import, push and pull
# need; a boot's `run` never loads it.
ARG BASE_IMAGE=nvcr.io/nvidia/l4t-tensorrt:r10.3.0-devel
FROM ${BASE_IMAGE}

ARG CONSTRAINTS=l4t-tensorrt-r10.3.0
ARG REQUIRE_TENSORRT=1
ARG EXTRAS=onnxruntime,cuda,fleet
ARG PIP_NO_INDEX=
ARG APP_UID=10001

USER root
COPY docker/check_base.py docker/constraints/ /tmp/engine-init-build/
COPY docker/wheels/ /tmp/wheels/
# Python >= 3.10, constraints made for this Python and CPU, pip, and TensorRT's bindings found
# WITHOUT importing them: `import tensorrt` fails during `docker build` on every Jetson base
# (driver libraries such as libnvdla_compiler.so are placeholders until the NVIDIA runtime
# mounts the host's at `docker run`). The job imports TensorRT at run time (exit 69 if it fails).
RUN python3 /tmp/engine-init-build/check_base.py --require-tensorrt "${REQUIRE_TENSORRT}" \
      --constraints "/tmp/engine-init-build/${CONSTRAINTS}.txt"

# The environment is a venv made WITHOUT ensurepip and filled by the base's own pip: the NVIDIA
# bases ship pip but not python3-venv (ensurepip), and installing that with apt needs their apt
# sources, which are wrong in r8.6.2, and a network to NVIDIA's repositories. The base's pip, run
# by the venv's interpreter, installs into the venv. --system-site-packages keeps the base's
# TensorRT bindings (installed system-wide) visible; the venv's pinned packages come first.
RUN python3 -m venv --without-pip --system-site-packages /opt/engine-init
COPY pyproject.toml README.md /src/
COPY app /src/app
RUN /opt/engine-init/bin/python -m pip install --no-cache-dir --disable-pip-version-check \
      ${PIP_NO_INDEX:+--no-index --find-links /tmp/wheels} \
      -c "/tmp/engine-init-build/${CONSTRAINTS}.txt" "/src[${EXTRAS}]" \
 && /opt/engine-init/bin/python /tmp/engine-init-build/check_base.py \
      --require-tensorrt "${REQUIRE_TENSORRT}" --constraints "/tmp/engine-init-build/${CONSTRAINTS}.txt" \
 && /opt/engine-init/bin/python -c "import app" \
 && rm -rf /tmp/wheels /tmp/engine-init-build /src

COPY entrypoint.py /opt/engine-init/entrypoint.py
COPY config/engine-init.yaml /etc/engine-init/config.yaml

# Non-root: the cache volume must be writable by this uid (docs/deploy.md: Permissions). The user is in
# `video`: on a Jetson the GPU device nodes are root:video 0660, and without the group CUDA sees
# no device. USER names the uid alone so that Docker adds the user's groups from /etc/group (with
# uid:gid it adds none); compose also passes group_add: [video] (docs/deploy.md: Permissions).
RUN (getent group ${APP_UID} || groupadd --gid ${APP_UID} engine-init) \
 && (getent group video || groupadd --system video) \
 && useradd --uid ${APP_UID} --gid ${APP_UID} --groups video --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin engine-init \
 && mkdir -p /var/cache/engine-init /run/engine-init \
 && chown ${APP_UID}:${APP_UID} /var/cache/engine-init /run/engine-init

# No .pyc writes (read-only root filesystem); temp files go to the /tmp tmpfs. The NVIDIA
# runtime exposes every GPU, and only the compute (CUDA) and utility (NVML) driver parts: all
# TensorRT needs. Bases that already set these to the same values are unchanged; a base's `all`
# is narrowed, which also keeps clear of container toolkits that refuse graphics/display
# capabilities on Jetson.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 TMPDIR=/tmp \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER ${APP_UID}
ENTRYPOINT ["/opt/engine-init/bin/python", "/opt/engine-init/entrypoint.py"]
CMD ["run"]
