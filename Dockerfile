# leanserve: OpenAI-compatible server on Deno + WebGPU (Vulkan).
# On NVIDIA hosts run with the NVIDIA container toolkit and graphics capability, e.g.
#   docker run --gpus all -e NVIDIA_DRIVER_CAPABILITIES=all -p 8000:8000 -v /models:/models leanserve \
#     --model /models/lq-49m --host 0.0.0.0
# Without a GPU the image falls back to Mesa lavapipe (CPU), which is correct but slow.
FROM denoland/deno:debian-2.9.6

# The Vulkan loader (libvulkan.so.1) is what Deno's WebGPU opens; without it requestAdapter() returns null.
# mesa-vulkan-drivers provides the CPU (lavapipe) ICD for hosts without a GPU.
RUN apt-get update \
  && apt-get install -y --no-install-recommends libvulkan1 mesa-vulkan-drivers \
  && rm -rf /var/lib/apt/lists/*

ENV NVIDIA_DRIVER_CAPABILITIES=all \
    DENO_WEBGPU_BACKEND=vulkan \
    XDG_RUNTIME_DIR=/tmp

WORKDIR /app
COPY deno.json deno.lock ./
COPY main.ts config.ts ./
COPY server/ server/
COPY inference/ inference/
COPY quant/ quant/
COPY kernels/ kernels/
COPY cli/ cli/
COPY bench/ bench/
# Cache npm dependencies at build time so the container starts offline.
RUN deno install --entrypoint main.ts

USER deno
EXPOSE 8000
ENTRYPOINT ["deno", "task", "start"]
CMD ["--help"]
