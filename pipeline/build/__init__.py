"""Building the candidate: the build stage (buildx, single or split per platform, merged by
digest) and its build-input key."""
