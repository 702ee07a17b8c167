"""Installing and starting things: the toolchain (``doctor --install``), the self-hosted
registry and the offline base image. Every process they start goes through pipeline/tools/."""
