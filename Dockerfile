# vaultkey-operator container image.
#
#   docker build -t vaultkey-operator .
#
# One recipe with deploy/image.sh, which builds the same image without Docker (where no registry
# is reachable, e.g. the test node): the build stage runs `deploy/image.sh rootfs` and the final
# stage is that directory FROM scratch. tests/image.rs fails when this file and the script drift
# (final-stage USER/ENTRYPOINT/CMD against the script's OCI config; only the rootfs copied).
#
# The root filesystem (see deploy/image.sh): the binary, the loader and the shared libraries
# `ldd` lists (libc, libm, libgcc_s: aws-lc, rustls' crypto, is compiled in; libgcc_s is Rust's
# unwinder), Debian's CA bundle, passwd/group with nonroot 65532, nsswitch.conf. That is what
# gcr.io/distroless/cc-debian12:nonroot, the former base, provided and the operator uses; not
# tzdata (the operator works in UTC only) nor /tmp (it writes no file; the chart's root
# filesystem is read-only).
# The build stage is bookworm (glibc 2.36): the libraries come from the stage that linked the
# binary, so their versions always match it.
# No shell in the final image: ENTRYPOINT and CMD are exec form.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# The whole workspace (tests/kv-emulator is a member, so its manifest must be present);
# .dockerignore leaves out target/ and .git/.
COPY . .
# aws-lc-sys builds with the cc crate and the image's gcc (no cmake, no bindgen needed);
# jemalloc (the global allocator, see src/main.rs) with its gcc and make.
RUN cargo build --release --locked --bin vaultkey-operator \
    && deploy/image.sh rootfs target/release/vaultkey-operator /rootfs

FROM scratch
COPY --from=build /rootfs /
# Numeric, so that Kubernetes can verify runAsNonRoot.
USER 65532:65532
ENTRYPOINT ["/vaultkey-operator"]
CMD ["run"]
