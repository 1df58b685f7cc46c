# The image the Helm chart runs: `docker build -t switchboard .` (not built in CI, which has no
# container runtime). The binary needs no system protoc (build.rs uses protox) and no shell.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin switchboard

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/switchboard /usr/local/bin/switchboard
USER 10001:10001
EXPOSE 50051 9464
ENTRYPOINT ["/usr/local/bin/switchboard"]
CMD ["serve"]
