# vaultkey-operator container image.
#
#   docker build -t vaultkey-operator .
#
# Runtime base: gcr.io/distroless/cc-debian12:nonroot, not a static musl build. The binary is
# built for the image's default *-unknown-linux-gnu target and links glibc dynamically; its only
# shared libraries are libc, libm, libgcc_s and the loader (aws-lc, rustls' crypto, is compiled
# in and needs nothing but libc). distroless/cc is distroless/base (glibc, CA certificates,
# tzdata, the nonroot user 65532) plus libgcc_s, which Rust's unwinder needs and base lacks.
# A musl build for distroless/static would need a musl C toolchain for aws-lc-sys and
# jemalloc, for a saving of a few MB.
# The build stage is bookworm (glibc 2.36) to match debian12: a binary linked against a newer
# glibc (trixie) can need symbol versions debian12 does not have.
# No shell in the final image: ENTRYPOINT and CMD are exec form.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# The whole workspace (tests/kv-emulator is a member, so its manifest must be present);
# .dockerignore leaves out target/ and .git/.
COPY . .
# aws-lc-sys builds with the cc crate and the image's gcc (no cmake, no bindgen needed);
# jemalloc (the global allocator, see src/main.rs) with its gcc and make.
RUN cargo build --release --locked --bin vaultkey-operator \
    && cp target/release/vaultkey-operator /vaultkey-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /vaultkey-operator /vaultkey-operator
# Numeric, so that Kubernetes can verify runAsNonRoot.
USER 65532:65532
ENTRYPOINT ["/vaultkey-operator"]
CMD ["run"]
