# fabric-sync image: controller, node agent and the bundled mock UFM.
# Build: docker build -t fabric-sync .   (needs a Docker engine; CI checks the build stage's
# command, `cargo build --release --locked`, directly.)

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
ARG FABRIC_SYNC_GIT_COMMIT=unknown
ENV FABRIC_SYNC_GIT_COMMIT=${FABRIC_SYNC_GIT_COMMIT}
RUN cargo build --release --locked --bins \
 && mkdir -p /out \
 && cp target/release/fabric-sync target/release/mock-ufm /out/

# Distroless: glibc, CA certificates, no shell, non-root user 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/fabric-sync /out/mock-ufm /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/fabric-sync"]
CMD ["controller"]
