# syntax=docker/dockerfile:1
# fabric-sync image: the controller, the node agent and the bundled mock UFM, in one image.
#
#   docker build --build-arg FABRIC_SYNC_GIT_COMMIT=$(git rev-parse --short=12 HEAD) -t fabric-sync:0.1.0 .
#
# Building the image needs a Docker engine (BuildKit), which CI machines lack. The build stage's
# command, `cargo build --release --locked --bins`, runs anywhere; tests/deploy_manifests.rs
# checks that it is the command README gives, and the runtime stage's user and entrypoint.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# .git is not in the build context (.dockerignore): pass the commit for `fabric-sync version`.
ARG FABRIC_SYNC_GIT_COMMIT=unknown
ENV FABRIC_SYNC_GIT_COMMIT=${FABRIC_SYNC_GIT_COMMIT}
# --locked: exactly Cargo.lock. The cache mounts keep the registry and the target directory
# between builds; the binaries are copied out because a cache mount is not part of any layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
 && mkdir -p /out \
 && cp target/release/fabric-sync target/release/mock-ufm /out/

# Distroless "cc": glibc (the binaries link against it; aws-lc-rs needs it) from the same Debian
# release as the build stage, CA certificates, tzdata; no shell and no package manager.
# Debugging: `kubectl debug -it <pod> --image=busybox --target=controller`.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="fabric-sync" \
      org.opencontainers.image.description="Keeps InfiniBand partition membership in NVIDIA UFM in step with Kubernetes pods" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/fabric-sync /out/mock-ufm /usr/local/bin/
# Numeric, so that Kubernetes' runAsNonRoot can check it; the manifests run as the same uid.
USER 65532:65532
# controller admin (/metrics, /healthz, /readyz), agent admin, mock UFM.
EXPOSE 8080 9810 8443
ENTRYPOINT ["/usr/local/bin/fabric-sync"]
CMD ["controller"]
