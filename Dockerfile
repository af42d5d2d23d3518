# leanserve: an OpenAI-compatible LLM server on Deno + WebGPU (Vulkan).
#
#   docker build -t leanserve .
#   docker run --gpus all -p 8000:8000 -v hf-cache:/data/hf leanserve                     # the default model
#   docker run --gpus all -p 8000:8000 -v hf-cache:/data/hf -e HF_TOKEN leanserve --model org/name
#
# NVIDIA GPUs, through Vulkan:
# - the host needs the NVIDIA driver and the NVIDIA Container Toolkit (that is what `--gpus all` uses);
# - the toolkit mounts the driver's Vulkan ICD (nvidia_icd.json, libGLX_nvidia.so.0) only for the "graphics"
#   capability: NVIDIA_DRIVER_CAPABILITIES must include graphics (it is "all" below; "compute,utility",
#   the CUDA default, leaves Vulkan without a driver);
# - if the ICD JSON is mounted where the Vulkan loader does not look, point VK_DRIVER_FILES at it (on some
#   hosts /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json);
# - libGLX_nvidia.so.0 links libX11 and libXext, and EGL-based ICDs need libEGL, hence those packages.
# Without a GPU the image runs on Mesa lavapipe (CPU), which is correct but slow; the server logs which
# adapter it got, and with none it exits with one line naming what is missing.
FROM denoland/deno:debian-2.9.6

# libvulkan1: the loader Deno's WebGPU opens; mesa-vulkan-drivers: the CPU (lavapipe) ICD.
RUN apt-get update \
  && apt-get install -y --no-install-recommends libvulkan1 mesa-vulkan-drivers libx11-6 libxext6 libegl1 \
  && rm -rf /var/lib/apt/lists/*

# HOST: listen on every interface inside the container (the server's own default is 127.0.0.1).
# HF_HOME: the Hugging Face cache (hub/ and token) lives on the /data/hf volume, shared with Python tools.
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=all \
    DENO_WEBGPU_BACKEND=vulkan \
    XDG_RUNTIME_DIR=/tmp \
    HOST=0.0.0.0 \
    PORT=8000 \
    HF_HOME=/data/hf

# /data/artifacts holds the quantized artifacts (--quantize at startup, POST /v1/quantize): the server's
# default --artifacts-dir, ./artifacts, links there. Both volumes must be writable by the user.
RUN mkdir -p /data/hf /data/artifacts /app && ln -s /data/artifacts /app/artifacts && chown -R deno:deno /data /app
WORKDIR /app
USER deno

COPY --chown=deno:deno deno.json deno.lock ./
COPY --chown=deno:deno main.ts engine_worker.ts config.ts ./
COPY --chown=deno:deno server/ server/
COPY --chown=deno:deno inference/ inference/
COPY --chown=deno:deno quant/ quant/
COPY --chown=deno:deno kernels/ kernels/
COPY --chown=deno:deno cli/ cli/
COPY --chown=deno:deno bench/ bench/
# Cache the npm dependencies and every module at build time (the Workers' entry modules too: they are loaded
# by URL, outside main.ts's import graph), so that the container starts without a registry.
RUN deno install --entrypoint main.ts engine_worker.ts inference/structured/mask_worker.ts

VOLUME ["/data/hf", "/data/artifacts"]
EXPOSE 8000
# /health is 503 while the model downloads and loads; the start period covers a first download.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15m --retries=3 \
  CMD ["deno", "eval", "--no-config", "const r = await fetch(`http://127.0.0.1:${Deno.env.get('PORT') ?? 8000}/health`); Deno.exit(r.ok ? 0 : 1)"]
# The README's start command; arguments given to `docker run` are appended (e.g. --model org/name).
ENTRYPOINT ["deno", "task", "start"]
